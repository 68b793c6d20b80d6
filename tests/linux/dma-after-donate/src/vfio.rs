//! The VFIO "group/container" interface (`include/uapi/linux/vfio.h`, Linux 6.12) and the
//! type1 IOMMU backend: the way a user-space driver gets a PCI device and programs the IOMMU
//! (here: Linux's arm-smmu-v3 driver on warden's virtual SMMU) with its own IOVA mappings.
//!
//! Sequence: open `/dev/vfio/vfio` (a *container*), check the API version and the type1v2
//! extension; open `/dev/vfio/GROUP` (the device's IOMMU group, all of whose devices must be
//! bound to vfio-pci: "viable"), attach it to the container, choose the type1v2 IOMMU (Linux
//! then allocates an unmanaged IOMMU domain, i.e. a stage-1 context with its own ASID, and
//! attaches the group's devices to it); get a device descriptor by its PCI name; map process
//! memory at chosen IOVAs with `VFIO_IOMMU_MAP_DMA` (type1 pins the pages, and accepts
//! `VM_PFNMAP` ranges such as an `mmap` of `/dev/mem` outside System RAM).
//!
//! Every ioctl number is `_IO(';', 100 + n)`: no size or direction bits, the structures carry
//! their own `argsz`.

use core::ffi::CStr;

use crate::sys::{Errno, Fd, MAP_SHARED, Mapping, O_RDWR, PROT_READ, PROT_WRITE};

const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}

const VFIO_GET_API_VERSION: u64 = vfio_io(0);
const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
const VFIO_SET_IOMMU: u64 = vfio_io(2);
const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const VFIO_DEVICE_GET_INFO: u64 = vfio_io(7);
const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
const VFIO_IOMMU_GET_INFO: u64 = vfio_io(12);
const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);

/// `VFIO_API_VERSION`.
const API_VERSION: u64 = 0;
/// `VFIO_TYPE1v2_IOMMU`: type1 with the v2 semantics (no partial unmaps of a mapping).
const TYPE1V2_IOMMU: u64 = 3;
const GROUP_FLAGS_VIABLE: u32 = 1 << 0;
const DEVICE_FLAGS_PCI: u32 = 1 << 1;
const REGION_INFO_FLAG_READ: u32 = 1 << 0;
const REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
const IOMMU_INFO_PGSIZES: u32 = 1 << 0;
const IOMMU_INFO_CAPS: u32 = 1 << 1;
const IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
const DMA_MAP_FLAG_READ: u32 = 1 << 0;
const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// Region indices of a vfio-pci device (`VFIO_PCI_*_REGION_INDEX`).
pub const PCI_BAR0_REGION: u32 = 0;
pub const PCI_CONFIG_REGION: u32 = 7;

/// `struct vfio_group_status`.
#[repr(C)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
struct DeviceInfo {
    argsz: u32,
    flags: u32,
    num_regions: u32,
    num_irqs: u32,
    cap_offset: u32,
}

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RegionInfo {
    argsz: u32,
    pub flags: u32,
    index: u32,
    cap_offset: u32,
    /// Bytes.
    pub size: u64,
    /// Where the region starts in the device descriptor's file offsets (for pread/pwrite/mmap).
    pub offset: u64,
}

/// `struct vfio_iommu_type1_info` followed by room for its capability chain (`cap_offset` is
/// from the start of the structure; each capability starts with `struct vfio_info_cap_header
/// { u16 id; u16 version; u32 next; }`).
#[repr(C, align(8))]
struct IommuInfo {
    argsz: u32,
    flags: u32,
    iova_pgsizes: u64,
    cap_offset: u32,
    pad: u32,
    caps: [u8; 488],
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap` (without the dirty bitmap).
#[repr(C)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

const fn argsz<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// What can go wrong, with the step that failed.
#[derive(Clone, Copy, Debug)]
pub enum VfioError {
    Sys(&'static str, Errno),
    Check(&'static str),
}

impl core::fmt::Display for VfioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Sys(what, e) => write!(f, "{what}: {e}"),
            Self::Check(what) => f.write_str(what),
        }
    }
}

fn sys(what: &'static str) -> impl FnOnce(Errno) -> VfioError {
    move |e| VfioError::Sys(what, e)
}

/// The IOMMU's page sizes and the IOVA ranges a mapping may use.
#[derive(Clone, Copy, Debug)]
pub struct IommuInfoSummary {
    pub page_sizes: u64,
    /// Up to 8 `(start, end inclusive)` ranges, `count` of them valid.
    pub ranges: [(u64, u64); 8],
    pub count: usize,
}

impl IommuInfoSummary {
    /// Whether `[iova, iova + size)` lies inside one valid range.
    pub fn allows(&self, iova: u64, size: u64) -> bool {
        let Some(last) = iova.checked_add(size - 1) else { return false };
        self.ranges[..self.count].iter().any(|&(start, end)| start <= iova && last <= end)
    }
}

/// A container with one group attached and the type1v2 IOMMU set: the group's devices are in a
/// fresh IOMMU domain whose mappings are made here. Dropping it closes the group and the
/// container: Linux unmaps everything and frees the domain.
#[derive(Debug)]
pub struct Container {
    // Field order is drop order: the group before the container.
    group: Fd,
    container: Fd,
}

impl Container {
    /// Opens the container, attaches `/dev/vfio/GROUP` (`group_path`) and sets the IOMMU.
    pub fn open(group_path: &CStr) -> Result<Self, VfioError> {
        let container = Fd::open(c"/dev/vfio/vfio", O_RDWR).map_err(sys("open /dev/vfio/vfio"))?;
        // SAFETY: VFIO_GET_API_VERSION takes no argument.
        let version = unsafe { container.ioctl(VFIO_GET_API_VERSION, 0) }
            .map_err(sys("VFIO_GET_API_VERSION"))?;
        if version != API_VERSION {
            return Err(VfioError::Check("VFIO_GET_API_VERSION is not VFIO_API_VERSION (0)"));
        }
        // SAFETY: VFIO_CHECK_EXTENSION takes the extension's number by value.
        let type1v2 = unsafe { container.ioctl(VFIO_CHECK_EXTENSION, TYPE1V2_IOMMU) }
            .map_err(sys("VFIO_CHECK_EXTENSION(TYPE1v2)"))?;
        if type1v2 != 1 {
            return Err(VfioError::Check(
                "the container lacks VFIO_TYPE1v2_IOMMU (is vfio_iommu_type1 loaded?)",
            ));
        }
        let group = Fd::open(group_path, O_RDWR).map_err(sys("open /dev/vfio/GROUP"))?;
        let mut status = GroupStatus { argsz: argsz::<GroupStatus>(), flags: 0 };
        // SAFETY: VFIO_GROUP_GET_STATUS fills a `struct vfio_group_status`, which `GroupStatus`
        // copies.
        unsafe { group.ioctl_ptr(VFIO_GROUP_GET_STATUS, &mut status) }
            .map_err(sys("VFIO_GROUP_GET_STATUS"))?;
        if status.flags & GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::Check(
                "the IOMMU group is not viable: a device in it is not bound to vfio-pci",
            ));
        }
        let mut container_fd = container.raw();
        // SAFETY: VFIO_GROUP_SET_CONTAINER reads one `__s32`, the container's descriptor.
        unsafe { group.ioctl_ptr(VFIO_GROUP_SET_CONTAINER, &mut container_fd) }
            .map_err(sys("VFIO_GROUP_SET_CONTAINER"))?;
        // SAFETY: VFIO_SET_IOMMU takes the IOMMU model's number by value.
        unsafe { container.ioctl(VFIO_SET_IOMMU, TYPE1V2_IOMMU) }
            .map_err(sys("VFIO_SET_IOMMU(TYPE1v2)"))?;
        Ok(Self { group, container })
    }

    /// `VFIO_IOMMU_GET_INFO` with its IOVA-range capability.
    pub fn iommu_info(&self) -> Result<IommuInfoSummary, VfioError> {
        let mut info = IommuInfo {
            argsz: argsz::<IommuInfo>(),
            flags: 0,
            iova_pgsizes: 0,
            cap_offset: 0,
            pad: 0,
            caps: [0; 488],
        };
        // SAFETY: VFIO_IOMMU_GET_INFO writes at most `argsz` bytes: the structure and its
        // capability chain, which `IommuInfo` has room for.
        unsafe { self.container.ioctl_ptr(VFIO_IOMMU_GET_INFO, &mut info) }
            .map_err(sys("VFIO_IOMMU_GET_INFO"))?;
        if info.flags & IOMMU_INFO_PGSIZES == 0 {
            return Err(VfioError::Check("VFIO_IOMMU_GET_INFO gave no page sizes"));
        }
        let mut summary =
            IommuInfoSummary { page_sizes: info.iova_pgsizes, ranges: [(0, 0); 8], count: 0 };
        // A chain that does not fit is not written (cap_offset stays 0); argsz then says how
        // much room it needs.
        if info.argsz > argsz::<IommuInfo>() {
            return Err(VfioError::Check("VFIO_IOMMU_GET_INFO's capabilities do not fit"));
        }
        if info.flags & IOMMU_INFO_CAPS == 0 || info.cap_offset == 0 {
            // No capability: no reserved regions to report, the whole input space is usable.
            summary.ranges[0] = (0, u64::MAX);
            summary.count = 1;
            return Ok(summary);
        }
        // The capability chain, read from the bytes the kernel wrote (offsets from the start).
        // SAFETY: `IommuInfo` is `repr(C)` plain data; viewing it as bytes reads initialized
        // memory of its exact size.
        let bytes: &[u8] = unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(&info).cast::<u8>(),
                core::mem::size_of::<IommuInfo>(),
            )
        };
        let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at =
            |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let u64_at = |o: usize| {
            bytes.get(o..o + 8).map(|b| {
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                u64::from_le_bytes(w)
            })
        };
        let mut offset = info.cap_offset as usize;
        let mut hops = 0;
        while offset != 0 && hops < 16 {
            hops += 1;
            let (Some(id), Some(next)) = (u16_at(offset), u32_at(offset + 4)) else {
                return Err(VfioError::Check("VFIO_IOMMU_GET_INFO capability out of bounds"));
            };
            if id == IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
                let nr = u32_at(offset + 8).unwrap_or(0) as usize;
                for i in 0..nr.min(summary.ranges.len()) {
                    let at = offset + 16 + 16 * i;
                    let (Some(start), Some(end)) = (u64_at(at), u64_at(at + 8)) else {
                        return Err(VfioError::Check("VFIO IOVA range capability out of bounds"));
                    };
                    summary.ranges[i] = (start, end);
                    summary.count = i + 1;
                }
            }
            offset = next as usize;
        }
        if summary.count == 0 {
            summary.ranges[0] = (0, u64::MAX);
            summary.count = 1;
        }
        Ok(summary)
    }

    /// Maps `size` bytes of process memory at `vaddr` at `iova`, readable and writable by the
    /// devices of the group.
    pub fn map_dma(&self, vaddr: u64, iova: u64, size: u64) -> Result<(), VfioError> {
        let mut map = DmaMap {
            argsz: argsz::<DmaMap>(),
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        };
        // SAFETY: VFIO_IOMMU_MAP_DMA reads a `struct vfio_iommu_type1_dma_map`, which `DmaMap`
        // copies; the kernel pins the pages itself and does not keep the pointer.
        unsafe { self.container.ioctl_ptr(VFIO_IOMMU_MAP_DMA, &mut map) }
            .map_err(sys("VFIO_IOMMU_MAP_DMA"))?;
        Ok(())
    }

    /// Removes the mapping at `iova` (Linux unmaps it, invalidates the IOTLB and unpins).
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<(), VfioError> {
        let mut unmap = DmaUnmap { argsz: argsz::<DmaUnmap>(), flags: 0, iova, size };
        // SAFETY: VFIO_IOMMU_UNMAP_DMA reads and writes back a `struct
        // vfio_iommu_type1_dma_unmap` without bitmap, which `DmaUnmap` copies.
        unsafe { self.container.ioctl_ptr(VFIO_IOMMU_UNMAP_DMA, &mut unmap) }
            .map_err(sys("VFIO_IOMMU_UNMAP_DMA"))?;
        if unmap.size != size {
            return Err(VfioError::Check("VFIO_IOMMU_UNMAP_DMA unmapped another size"));
        }
        Ok(())
    }

    /// The device named `name` (e.g. `0000:00:04.0`) of the group, which must be a vfio-pci
    /// device.
    pub fn device(&self, name: &CStr) -> Result<Device, VfioError> {
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads the device's name, a NUL-terminated string.
        let fd = unsafe { self.group.ioctl_cstr(VFIO_GROUP_GET_DEVICE_FD, name) }
            .map_err(sys("VFIO_GROUP_GET_DEVICE_FD"))?;
        // A descriptor from the kernel; owned from here on.
        let fd = Fd::adopt(fd as i32);
        let mut info = DeviceInfo {
            argsz: argsz::<DeviceInfo>(),
            flags: 0,
            num_regions: 0,
            num_irqs: 0,
            cap_offset: 0,
        };
        // SAFETY: VFIO_DEVICE_GET_INFO fills a `struct vfio_device_info` (up to `argsz`).
        unsafe { fd.ioctl_ptr(VFIO_DEVICE_GET_INFO, &mut info) }
            .map_err(sys("VFIO_DEVICE_GET_INFO"))?;
        if info.flags & DEVICE_FLAGS_PCI == 0 || info.num_regions <= PCI_CONFIG_REGION {
            return Err(VfioError::Check("the VFIO device is not a vfio-pci device"));
        }
        let _ = (info.num_irqs, info.cap_offset);
        Ok(Device { fd })
    }
}

/// A vfio-pci device descriptor: its regions (BARs, config space) by file offset.
#[derive(Debug)]
pub struct Device {
    fd: Fd,
}

impl Device {
    pub fn region(&self, index: u32) -> Result<RegionInfo, VfioError> {
        let mut info = RegionInfo {
            argsz: argsz::<RegionInfo>(),
            flags: 0,
            index,
            cap_offset: 0,
            size: 0,
            offset: 0,
        };
        // SAFETY: VFIO_DEVICE_GET_REGION_INFO fills a `struct vfio_region_info` (up to
        // `argsz`; capabilities beyond it are only described, not written).
        unsafe { self.fd.ioctl_ptr(VFIO_DEVICE_GET_REGION_INFO, &mut info) }
            .map_err(sys("VFIO_DEVICE_GET_REGION_INFO"))?;
        let _ = info.cap_offset;
        Ok(info)
    }

    /// Maps a region (a memory BAR) into the process: uncached device memory.
    pub fn map_region(&self, region: &RegionInfo) -> Result<Mapping, VfioError> {
        let needed = REGION_INFO_FLAG_READ | REGION_INFO_FLAG_WRITE | REGION_INFO_FLAG_MMAP;
        if region.flags & needed != needed || region.size == 0 {
            return Err(VfioError::Check("the region cannot be mapped read-write"));
        }
        Mapping::new(
            region.size as usize,
            PROT_READ | PROT_WRITE,
            MAP_SHARED,
            Some(&self.fd),
            region.offset,
        )
        .map_err(sys("mmap of a VFIO region"))
    }

    /// Reads a 16-bit little-endian value of PCI config space at `offset`.
    pub fn config_read16(&self, config: &RegionInfo, offset: u64) -> Result<u16, VfioError> {
        let mut b = [0u8; 2];
        let n = self.fd.pread(&mut b, config.offset + offset).map_err(sys("config read"))?;
        if n != 2 {
            return Err(VfioError::Check("short PCI config read"));
        }
        Ok(u16::from_le_bytes(b))
    }

    pub fn config_write16(
        &self,
        config: &RegionInfo,
        offset: u64,
        value: u16,
    ) -> Result<(), VfioError> {
        let n = self
            .fd
            .pwrite(&value.to_le_bytes(), config.offset + offset)
            .map_err(sys("config write"))?;
        if n != 2 {
            return Err(VfioError::Check("short PCI config write"));
        }
        Ok(())
    }
}
