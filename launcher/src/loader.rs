//! Loading the guest: the kernel (an ELF64 x86_64 `vmlinux` carrying the lguest boot note) and the
//! optional initrd, into guest memory (docs/abi.md §2.1).
//!
//! Why not `linux_loader::loader::Elf::load`: it checks only the ELF magic, byte order and
//! program-header size (not class, machine or type), does not check that a segment lies inside the
//! file or that `p_filesz <= p_memsz`, leaves segments below 1 MiB (our zero page and command line)
//! alone, leaves out segments with `p_filesz == 0` from the kernel's end (so an initrd could be put
//! on top of a bss-only segment), does not zero bss, looks only for Xen's PVH note (walking every
//! note with 4-byte alignment) and reports every failure as a bare "Unable to read kernel image".
//! So the loading is ours, in its style: one typed error ([`KernelProblem`]) per check, checked
//! arithmetic on every value taken from the image. linux-loader still gives us the ELF64 header
//! types and constants (`linux_loader::elf`), and vm-memory the bounds-checked copies.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use linux_loader::elf::{
    Elf64_Ehdr, Elf64_Nhdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG,
    EM_X86_64, ET_EXEC, PT_LOAD, PT_NOTE, SELFMAG,
};
use vm_memory::ByteValued;

use crate::error::{Error, KernelProblem, Role};
use crate::memory::{GuestMemory, MemError, OutOfRange};
use lg_core::abi::{self, BootNote, PAGE_SIZE};

/// Room an initrd must leave free between the end of the kernel image and itself: the kernel's
/// early allocations (brk, page tables) go there.
pub const INITRD_GAP: u64 = 1 << 20;

/// Where a bzImage keeps the boot protocol's "HdrS" magic: it starts with the real-mode boot
/// sector, whose setup header sits at the same offsets as in the zero page.
const BZIMAGE_MAGIC_OFFSET: u64 = abi::zero_page::HEADER as u64;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
/// Notes are a few hundred bytes; anything this big is not a kernel's note segment.
const MAX_NOTE_SEGMENT: u64 = 1 << 20;

const EHDR_SIZE: usize = core::mem::size_of::<Elf64_Ehdr>();
const PHDR_SIZE: usize = core::mem::size_of::<Elf64_Phdr>();
const NHDR_SIZE: usize = core::mem::size_of::<Elf64_Nhdr>();
const BOOT_NOTE_SIZE: usize = core::mem::size_of::<BootNote>();

/// Where an image's bytes come from: a file, or a byte slice in tests.
pub trait Image {
    /// Length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; the caller has checked the range against [`Image::size`].
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Copies `len` bytes from `offset` to guest-physical `gpa`.
    fn load_into(
        &mut self,
        offset: u64,
        len: u64,
        mem: &GuestMemory,
        gpa: u64,
    ) -> Result<(), MemError>;
}

/// An opened kernel or initrd file.
pub struct FileImage {
    file: File,
    size: u64,
}

impl FileImage {
    pub fn open(path: &Path) -> io::Result<FileImage> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(FileImage { file, size })
    }
}

impl Image for FileImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn load_into(
        &mut self,
        offset: u64,
        len: u64,
        mem: &GuestMemory,
        gpa: u64,
    ) -> Result<(), MemError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(MemError::Io)?;
        mem.load_from(gpa, &mut self.file, len)
    }
}

impl Image for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn load_into(
        &mut self,
        offset: u64,
        len: u64,
        mem: &GuestMemory,
        gpa: u64,
    ) -> Result<(), MemError> {
        let mut src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..))
            .ok_or_else(|| MemError::Io(io::ErrorKind::UnexpectedEof.into()))?;
        mem.load_from(gpa, &mut src, len)
    }
}

/// One `PT_LOAD` segment as loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index in the program header table (what error messages call "segment N").
    pub index: usize,
    pub offset: u64,
    pub filesz: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub memsz: u64,
}

impl Segment {
    /// One past the last guest-physical byte; cannot overflow once validated.
    pub fn end(&self) -> u64 {
        self.paddr.saturating_add(self.memsz)
    }
}

/// A validated kernel image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// Guest-virtual address of the first instruction (from the boot note).
    pub entry: u64,
    /// Guest-physical address of the initial PML4 (from the boot note).
    pub cr3: u64,
    /// The `PT_LOAD` segments with a non-zero `p_memsz`, in program-header order.
    pub segments: Vec<Segment>,
    /// One past the highest guest-physical byte the image occupies.
    pub end: u64,
}

impl Kernel {
    /// `--verbose` lines.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .segments
            .iter()
            .map(|s| {
                format!(
                    "kernel segment {}: guest-physical {:#x}-{:#x} ({:#x} bytes from file offset \
                     {:#x}, {:#x} zeroed), virtual {:#x}",
                    s.index,
                    s.paddr,
                    s.end(),
                    s.filesz,
                    s.offset,
                    s.memsz - s.filesz,
                    s.vaddr
                )
            })
            .collect();
        lines.push(format!(
            "kernel entry {:#x}, cr3 {:#x}, image ends at {:#x}",
            self.entry, self.cr3, self.end
        ));
        lines
    }
}

/// What can go wrong loading a kernel, before the file name is attached.
#[derive(Debug)]
pub enum LoadError {
    Bad(KernelProblem),
    Read(io::Error),
    Memory(OutOfRange),
}

impl From<KernelProblem> for LoadError {
    fn from(problem: KernelProblem) -> Self {
        LoadError::Bad(problem)
    }
}

impl From<MemError> for LoadError {
    fn from(err: MemError) -> Self {
        match err {
            MemError::OutOfRange(r) => LoadError::Memory(r),
            MemError::Io(e) => LoadError::Read(e),
        }
    }
}

impl LoadError {
    fn into_error(self, role: Role, path: &Path) -> Error {
        match self {
            LoadError::Bad(problem) => Error::BadKernel {
                path: path.to_owned(),
                problem,
            },
            LoadError::Read(err) => Error::CannotRead {
                role,
                path: path.to_owned(),
                err,
            },
            LoadError::Memory(r) => Error::GuestRange(r),
        }
    }
}

/// Validates the kernel in `image` and loads it into `mem`. `path` is for messages.
pub fn load_kernel<I: Image>(
    image: &mut I,
    path: &Path,
    mem: &GuestMemory,
) -> Result<Kernel, Error> {
    load(image, mem).map_err(|e| e.into_error(Role::Kernel, path))
}

fn load<I: Image>(image: &mut I, mem: &GuestMemory) -> Result<Kernel, LoadError> {
    let kernel = parse(image, mem.size())?;
    for seg in &kernel.segments {
        image.load_into(seg.offset, seg.filesz, mem, seg.paddr)?;
        // The bss: memory may not be fresh (it is now, but nothing here should rely on that).
        mem.zero(seg.paddr + seg.filesz, seg.memsz - seg.filesz)?;
    }
    Ok(kernel)
}

/// Reads and checks everything in the image without touching guest memory: the ELF header, the
/// boot note, then every `PT_LOAD` against a guest of `mem_size` bytes.
pub fn parse<I: Image>(image: &mut I, mem_size: u64) -> Result<Kernel, LoadError> {
    let file_size = image.size();
    let ehdr = read_ehdr(image)?;
    let phdrs = read_phdrs(image, &ehdr)?;
    let note = find_boot_note(image, &phdrs)?;
    if note.abi_version != abi::VERSION {
        return Err(KernelProblem::WrongAbi(note.abi_version).into());
    }
    if !is_canonical(note.entry) {
        return Err(KernelProblem::EntryNotCanonical(note.entry).into());
    }
    let segments = check_segments(&phdrs, file_size, mem_size)?;
    check_cr3(note.cr3, &segments, mem_size)?;
    let end = segments.iter().map(Segment::end).max().unwrap_or(0);
    Ok(Kernel {
        entry: note.entry,
        cr3: note.cr3,
        segments,
        end,
    })
}

/// `Truncated` unless `[offset, offset + len)` is inside the file.
fn check_in_file(
    what: impl Into<String>,
    offset: u64,
    len: u64,
    file_size: u64,
) -> Result<(), KernelProblem> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        end => Err(KernelProblem::Truncated {
            what: what.into(),
            end: end.unwrap_or(u64::MAX),
            file_size,
        }),
    }
}

fn read_ehdr<I: Image>(image: &mut I) -> Result<Elf64_Ehdr, LoadError> {
    let file_size = image.size();
    let mut magic = [0u8; SELFMAG];
    if file_size >= SELFMAG as u64 {
        image
            .read_exact_at(0, &mut magic)
            .map_err(LoadError::Read)?;
    }
    if &magic != ELFMAG {
        return Err(not_elf(image)?.into());
    }
    check_in_file("ELF header", 0, EHDR_SIZE as u64, file_size)?;
    let mut ehdr = Elf64_Ehdr::default();
    image
        .read_exact_at(0, ehdr.as_mut_slice())
        .map_err(LoadError::Read)?;
    if ehdr.e_ident[EI_CLASS] != ELFCLASS64 {
        return Err(KernelProblem::NotElf64.into());
    }
    if ehdr.e_ident[EI_DATA] != ELFDATA2LSB {
        return Err(KernelProblem::BigEndian.into());
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(KernelProblem::WrongMachine(ehdr.e_machine).into());
    }
    if ehdr.e_type != ET_EXEC {
        return Err(KernelProblem::NotExecutable(ehdr.e_type).into());
    }
    if usize::from(ehdr.e_phentsize) != PHDR_SIZE {
        return Err(KernelProblem::BadProgramHeaderSize(ehdr.e_phentsize).into());
    }
    Ok(ehdr)
}

/// Not an ELF: a bzImage gets its own message.
fn not_elf<I: Image>(image: &mut I) -> Result<KernelProblem, LoadError> {
    let mut magic = [0u8; 4];
    if image.size() >= BZIMAGE_MAGIC_OFFSET + magic.len() as u64 {
        image
            .read_exact_at(BZIMAGE_MAGIC_OFFSET, &mut magic)
            .map_err(LoadError::Read)?;
        if &magic == BZIMAGE_MAGIC {
            return Ok(KernelProblem::BzImage);
        }
    }
    Ok(KernelProblem::NotElf)
}

fn read_phdrs<I: Image>(image: &mut I, ehdr: &Elf64_Ehdr) -> Result<Vec<Elf64_Phdr>, LoadError> {
    let count = u64::from(ehdr.e_phnum);
    // PHDR_SIZE * u16::MAX cannot overflow a u64; the offset can make the end overflow.
    check_in_file(
        "program header table",
        ehdr.e_phoff,
        count * PHDR_SIZE as u64,
        image.size(),
    )?;
    let mut phdrs = Vec::with_capacity(usize::from(ehdr.e_phnum));
    for i in 0..count {
        let mut phdr = Elf64_Phdr::default();
        image
            .read_exact_at(ehdr.e_phoff + i * PHDR_SIZE as u64, phdr.as_mut_slice())
            .map_err(LoadError::Read)?;
        phdrs.push(phdr);
    }
    Ok(phdrs)
}

fn align_up(value: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Finds the one lguest boot note among the `PT_NOTE` segments.
fn find_boot_note<I: Image>(image: &mut I, phdrs: &[Elf64_Phdr]) -> Result<BootNote, LoadError> {
    let mut found = None;
    for (index, phdr) in phdrs.iter().enumerate() {
        if phdr.p_type != PT_NOTE {
            continue;
        }
        check_in_file(
            format!("PT_NOTE segment {index}"),
            phdr.p_offset,
            phdr.p_filesz,
            image.size(),
        )?;
        if phdr.p_filesz > MAX_NOTE_SEGMENT {
            return Err(KernelProblem::BadNoteSegment { index }.into());
        }
        // Bounded by MAX_NOTE_SEGMENT just above.
        let mut data = vec![0u8; phdr.p_filesz as usize];
        image
            .read_exact_at(phdr.p_offset, &mut data)
            .map_err(LoadError::Read)?;
        // Notes are 4-byte aligned, except in segments of 8-byte aligned ones (GNU properties).
        let align = if phdr.p_align == 8 { 8 } else { 4 };
        for note in parse_notes(&data, align).ok_or(KernelProblem::BadNoteSegment { index })? {
            let name = note.name.strip_suffix(&[0]).unwrap_or(note.name);
            if name != abi::NOTE_NAME || note.kind != abi::NOTE_TYPE_BOOT {
                continue;
            }
            if note.desc.len() != BOOT_NOTE_SIZE {
                return Err(KernelProblem::BootNoteSize(note.desc.len() as u32).into());
            }
            if found.is_some() {
                return Err(KernelProblem::DuplicateBootNote.into());
            }
            let word = |i: usize| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&note.desc[i * 8..i * 8 + 8]);
                u64::from_le_bytes(bytes)
            };
            found = Some(BootNote {
                abi_version: word(0),
                entry: word(1),
                cr3: word(2),
            });
        }
    }
    found.ok_or_else(|| KernelProblem::NoBootNote.into())
}

struct Note<'a> {
    name: &'a [u8],
    kind: u32,
    desc: &'a [u8],
}

/// Splits a note segment into its notes; `None` if they do not add up to the segment (the last
/// note's trailing padding may be missing, or followed by a few zero bytes of padding).
fn parse_notes(data: &[u8], align: usize) -> Option<Vec<Note<'_>>> {
    let mut notes = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < NHDR_SIZE && rest.iter().all(|&b| b == 0) {
            break; // padding after the last note
        }
        let mut nhdr = Elf64_Nhdr::default();
        nhdr.as_mut_slice()
            .copy_from_slice(data.get(pos..pos.checked_add(NHDR_SIZE)?)?);
        let name_start = pos + NHDR_SIZE;
        let name_end = name_start.checked_add(usize::try_from(nhdr.n_namesz).ok()?)?;
        let desc_start = align_up(name_end, align)?;
        let desc_end = desc_start.checked_add(usize::try_from(nhdr.n_descsz).ok()?)?;
        notes.push(Note {
            name: data.get(name_start..name_end)?,
            kind: nhdr.n_type,
            desc: data.get(desc_start..desc_end)?,
        });
        pos = align_up(desc_end, align)?.min(data.len());
    }
    Some(notes)
}

/// Bits 63..47 all equal.
fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

fn check_segments(
    phdrs: &[Elf64_Phdr],
    file_size: u64,
    mem_size: u64,
) -> Result<Vec<Segment>, KernelProblem> {
    let mut segments = Vec::new();
    for (index, p) in phdrs.iter().enumerate() {
        if p.p_type != PT_LOAD || p.p_memsz == 0 {
            continue;
        }
        if p.p_filesz > p.p_memsz {
            return Err(KernelProblem::FileszOverMemsz {
                index,
                filesz: p.p_filesz,
                memsz: p.p_memsz,
            });
        }
        check_in_file(
            format!("segment {index}"),
            p.p_offset,
            p.p_filesz,
            file_size,
        )?;
        if p.p_paddr < abi::LOW_RESERVED {
            return Err(KernelProblem::SegmentBelowReserved {
                index,
                start: p.p_paddr,
            });
        }
        match p.p_paddr.checked_add(p.p_memsz) {
            Some(end) if end <= mem_size => {}
            _ => {
                return Err(KernelProblem::SegmentOutsideMemory {
                    index,
                    start: p.p_paddr,
                    memsz: p.p_memsz,
                    mem: mem_size,
                })
            }
        }
        segments.push(Segment {
            index,
            offset: p.p_offset,
            filesz: p.p_filesz,
            vaddr: p.p_vaddr,
            paddr: p.p_paddr,
            memsz: p.p_memsz,
        });
    }
    if segments.is_empty() {
        return Err(KernelProblem::NoLoadSegments);
    }
    let mut by_address: Vec<&Segment> = segments.iter().collect();
    by_address.sort_by_key(|s| s.paddr);
    for pair in by_address.windows(2) {
        if pair[0].end() > pair[1].paddr {
            let (a, b) = (pair[0].index, pair[1].index);
            return Err(KernelProblem::SegmentsOverlap {
                first: a.min(b),
                second: a.max(b),
            });
        }
    }
    Ok(segments)
}

/// The initial PML4 must be a whole page inside guest memory and inside the image.
fn check_cr3(cr3: u64, segments: &[Segment], mem_size: u64) -> Result<(), KernelProblem> {
    if !cr3.is_multiple_of(PAGE_SIZE) {
        return Err(KernelProblem::Cr3NotAligned(cr3));
    }
    if cr3.checked_add(PAGE_SIZE).is_none_or(|end| end > mem_size) {
        return Err(KernelProblem::Cr3OutsideMemory { cr3, mem: mem_size });
    }
    if !segments
        .iter()
        .any(|s| s.paddr <= cr3 && cr3 + PAGE_SIZE <= s.end())
    {
        return Err(KernelProblem::Cr3OutsideImage(cr3));
    }
    Ok(())
}

/// Where the initrd went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Initrd {
    pub gpa: u64,
    pub size: u64,
}

/// Where an initrd of `size` bytes goes: as high as it fits, page aligned, ending at or below the
/// end of memory, at least [`INITRD_GAP`] above the (page-rounded) end of the kernel.
/// `Err(room)`: it does not fit; `room` is the largest size that would.
pub fn place_initrd(mem_size: u64, kernel_end: u64, size: u64) -> Result<u64, u64> {
    let floor = kernel_end
        .checked_next_multiple_of(PAGE_SIZE)
        .and_then(|end| end.checked_add(INITRD_GAP))
        .unwrap_or(u64::MAX);
    let room = mem_size.saturating_sub(floor);
    if size > room {
        return Err(room);
    }
    // size <= room = mem_size - floor, so this is >= floor (floor is page aligned).
    Ok((mem_size - size) & !(PAGE_SIZE - 1))
}

/// Places and loads the initrd in `image` above a kernel ending at `kernel_end`.
pub fn load_initrd<I: Image>(
    image: &mut I,
    path: &Path,
    mem: &GuestMemory,
    kernel_end: u64,
) -> Result<Initrd, Error> {
    let size = image.size();
    let gpa = place_initrd(mem.size(), kernel_end, size).map_err(|room| Error::InitrdTooBig {
        path: path.to_owned(),
        size,
        room,
    })?;
    image
        .load_into(0, size, mem, gpa)
        .map_err(|e| LoadError::from(e).into_error(Role::Initrd, path))?;
    Ok(Initrd { gpa, size })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    pub const ENTRY: u64 = 0xffff_ffff_8100_0000;

    /// One program header and the bytes it points at (placed by [`ElfBuilder::build`]).
    #[derive(Clone)]
    pub struct Ph {
        pub p_type: u32,
        pub paddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
        pub align: u64,
        /// Overrides for corrupt images.
        pub offset: Option<u64>,
        pub filesz: Option<u64>,
    }

    impl Ph {
        pub fn load(paddr: u64, data: Vec<u8>, memsz: u64) -> Ph {
            Ph {
                p_type: PT_LOAD,
                paddr,
                data,
                memsz,
                align: PAGE_SIZE,
                offset: None,
                filesz: None,
            }
        }

        pub fn note(data: Vec<u8>) -> Ph {
            Ph {
                p_type: PT_NOTE,
                paddr: 0,
                memsz: data.len() as u64,
                data,
                align: 4,
                offset: None,
                filesz: None,
            }
        }
    }

    /// Assembles a minimal ELF64 image: header, program headers, then each segment's bytes.
    #[derive(Clone)]
    pub struct ElfBuilder {
        pub class: u8,
        pub data: u8,
        pub machine: u16,
        pub e_type: u16,
        pub phentsize: u16,
        pub phs: Vec<Ph>,
    }

    impl ElfBuilder {
        pub fn new(phs: Vec<Ph>) -> ElfBuilder {
            ElfBuilder {
                class: ELFCLASS64,
                data: ELFDATA2LSB,
                machine: EM_X86_64,
                e_type: ET_EXEC,
                phentsize: PHDR_SIZE as u16,
                phs,
            }
        }

        pub fn build(&self) -> Vec<u8> {
            let mut out = vec![0u8; EHDR_SIZE + PHDR_SIZE * self.phs.len()];
            let mut offsets = Vec::new();
            for ph in &self.phs {
                while !out.len().is_multiple_of(16) {
                    out.push(0);
                }
                offsets.push(out.len() as u64);
                out.extend_from_slice(&ph.data);
            }
            let mut ehdr = Elf64_Ehdr::default();
            ehdr.e_ident[..4].copy_from_slice(ELFMAG);
            ehdr.e_ident[EI_CLASS] = self.class;
            ehdr.e_ident[EI_DATA] = self.data;
            ehdr.e_ident[6] = 1;
            ehdr.e_type = self.e_type;
            ehdr.e_machine = self.machine;
            ehdr.e_version = 1;
            ehdr.e_entry = ENTRY;
            ehdr.e_phoff = EHDR_SIZE as u64;
            ehdr.e_ehsize = EHDR_SIZE as u16;
            ehdr.e_phentsize = self.phentsize;
            ehdr.e_phnum = self.phs.len() as u16;
            out[..EHDR_SIZE].copy_from_slice(ehdr.as_slice());
            for (i, (ph, offset)) in self.phs.iter().zip(offsets).enumerate() {
                let phdr = Elf64_Phdr {
                    p_type: ph.p_type,
                    p_flags: 7,
                    p_offset: ph.offset.unwrap_or(offset),
                    p_vaddr: ph.paddr.wrapping_add(0xffff_ffff_8000_0000),
                    p_paddr: ph.paddr,
                    p_filesz: ph.filesz.unwrap_or(ph.data.len() as u64),
                    p_memsz: ph.memsz,
                    p_align: ph.align,
                };
                let at = EHDR_SIZE + i * PHDR_SIZE;
                out[at..at + PHDR_SIZE].copy_from_slice(phdr.as_slice());
            }
            out
        }
    }

    /// One ELF note, padded to 4 bytes.
    pub fn note_bytes(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(desc);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    pub fn boot_note(abi_version: u64, entry: u64, cr3: u64) -> Vec<u8> {
        let mut desc = Vec::new();
        for word in [abi_version, entry, cr3] {
            desc.extend_from_slice(&word.to_le_bytes());
        }
        note_bytes(b"lguest\0", abi::NOTE_TYPE_BOOT, &desc)
    }

    /// A good image: text at 1 MiB (with the PML4 at 1 MiB + 4 KiB), a bss segment after it,
    /// and a note segment holding a foreign note then ours.
    pub fn good_phs() -> Vec<Ph> {
        let mut text = vec![0x90u8; 3 * PAGE_SIZE as usize];
        text[0] = 0xf4;
        let mut notes = note_bytes(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8]);
        notes.extend(boot_note(abi::VERSION, ENTRY, MIB + PAGE_SIZE));
        vec![
            Ph::load(MIB, text, 3 * PAGE_SIZE + 100),
            Ph::note(notes),
            Ph::load(2 * MIB, vec![0xcc; 10], 2 * PAGE_SIZE),
        ]
    }

    fn parse_bytes(bytes: &[u8], mem: u64) -> Result<Kernel, KernelProblem> {
        let mut image: &[u8] = bytes;
        parse(&mut image, mem).map_err(|e| match e {
            LoadError::Bad(p) => p,
            other => panic!("expected a kernel problem, got {other:?}"),
        })
    }

    fn with_note(note: Vec<u8>) -> Vec<u8> {
        let mut phs = good_phs();
        phs[1] = Ph::note(note);
        ElfBuilder::new(phs).build()
    }

    #[test]
    fn good_image_loads() {
        let bytes = ElfBuilder::new(good_phs()).build();
        let mem = GuestMemory::new(16 * MIB).expect("map");
        // Dirty memory, to see the bss zeroed.
        mem.write(MIB, &vec![0xee; 4 * PAGE_SIZE as usize])
            .expect("fill");
        mem.write(2 * MIB, &vec![0xee; 4 * PAGE_SIZE as usize])
            .expect("fill");
        let mut image: &[u8] = &bytes;
        let kernel = load_kernel(&mut image, Path::new("vmlinux"), &mem).expect("loads");
        assert_eq!(kernel.entry, ENTRY);
        assert_eq!(kernel.cr3, MIB + PAGE_SIZE);
        assert_eq!(kernel.end, 2 * MIB + 2 * PAGE_SIZE);
        assert_eq!(kernel.segments.len(), 2);
        assert_eq!(kernel.segments[0].index, 0);
        assert_eq!(kernel.segments[1].index, 2);
        assert_eq!(kernel.segments[1].vaddr, 0xffff_ffff_8020_0000);

        let mut text = vec![0u8; 3 * PAGE_SIZE as usize + 200];
        mem.read(MIB, &mut text).expect("read");
        assert_eq!(text[0], 0xf4);
        assert!(text[1..3 * PAGE_SIZE as usize].iter().all(|&b| b == 0x90));
        // bss zeroed up to p_memsz, memory after it untouched.
        assert!(text[3 * PAGE_SIZE as usize..3 * PAGE_SIZE as usize + 100]
            .iter()
            .all(|&b| b == 0));
        assert!(text[3 * PAGE_SIZE as usize + 100..]
            .iter()
            .all(|&b| b == 0xee));
        let mut data = vec![0u8; 2 * PAGE_SIZE as usize];
        mem.read(2 * MIB, &mut data).expect("read");
        assert!(data[..10].iter().all(|&b| b == 0xcc));
        assert!(data[10..].iter().all(|&b| b == 0));
        assert!(kernel.describe().iter().any(|l| l.contains("cr3 0x101000")));
    }

    #[test]
    fn file_images_load_like_slices() {
        let bytes = ElfBuilder::new(good_phs()).build();
        let path = std::env::temp_dir().join(format!("lguest-loader-{}", std::process::id()));
        std::fs::write(&path, &bytes).expect("write");
        let mut file = FileImage::open(&path).expect("open");
        let _ = std::fs::remove_file(&path);
        let mem = GuestMemory::new(16 * MIB).expect("map");
        let kernel = load_kernel(&mut file, &path, &mem).expect("loads");
        let mut first = [0u8; 2];
        mem.read(MIB, &mut first).expect("read");
        assert_eq!(first, [0xf4, 0x90]);
        assert_eq!(kernel.cr3, MIB + PAGE_SIZE);
    }

    #[test]
    fn missing_note_is_not_an_lguest_kernel() {
        let mut phs = good_phs();
        phs.remove(1);
        let err = parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB);
        assert_eq!(err, Err(KernelProblem::NoBootNote));
        // A note segment with only foreign notes, or our name with another type.
        let bytes = with_note(note_bytes(b"Xen\0", abi::NOTE_TYPE_BOOT, &[0; 24]));
        assert_eq!(
            parse_bytes(&bytes, 16 * MIB),
            Err(KernelProblem::NoBootNote)
        );
        let bytes = with_note(note_bytes(b"lguest\0", 1, &[0; 24]));
        assert_eq!(
            parse_bytes(&bytes, 16 * MIB),
            Err(KernelProblem::NoBootNote)
        );
        let e = Error::BadKernel {
            path: "vmlinux".into(),
            problem: KernelProblem::NoBootNote,
        };
        assert_eq!(
            e.to_string(),
            "'vmlinux' is not an lguest guest kernel: no lguest boot note"
        );
    }

    #[test]
    fn wrong_abi_version() {
        let bytes = with_note(boot_note(7, ENTRY, MIB + PAGE_SIZE));
        let err = parse_bytes(&bytes, 16 * MIB).unwrap_err();
        assert_eq!(err, KernelProblem::WrongAbi(7));
        let e = Error::BadKernel {
            path: "vmlinux".into(),
            problem: err,
        };
        assert_eq!(
            e.to_string(),
            "'vmlinux' was built for lguest ABI 7, this launcher speaks 1"
        );
    }

    #[test]
    fn bad_boot_notes() {
        let short = note_bytes(b"lguest\0", abi::NOTE_TYPE_BOOT, &[0; 16]);
        assert_eq!(
            parse_bytes(&with_note(short), 16 * MIB),
            Err(KernelProblem::BootNoteSize(16))
        );
        let mut two = boot_note(1, ENTRY, MIB + PAGE_SIZE);
        two.extend(boot_note(1, ENTRY, MIB + PAGE_SIZE));
        assert_eq!(
            parse_bytes(&with_note(two), 16 * MIB),
            Err(KernelProblem::DuplicateBootNote)
        );
        // A name without its NUL is accepted.
        let bare = note_bytes(
            b"lguest",
            abi::NOTE_TYPE_BOOT,
            &boot_note(1, ENTRY, MIB)[20..],
        );
        assert!(parse_bytes(&with_note(bare), 16 * MIB).is_ok());
        // Notes that run past their segment.
        let mut broken = boot_note(1, ENTRY, MIB + PAGE_SIZE);
        broken[4] = 200; // descsz
        assert_eq!(
            parse_bytes(&with_note(broken), 16 * MIB),
            Err(KernelProblem::BadNoteSegment { index: 1 })
        );
        let mut huge = boot_note(1, ENTRY, MIB + PAGE_SIZE);
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes()); // namesz
        assert_eq!(
            parse_bytes(&with_note(huge), 16 * MIB),
            Err(KernelProblem::BadNoteSegment { index: 1 })
        );
        let mut stub = boot_note(1, ENTRY, MIB + PAGE_SIZE);
        stub.extend_from_slice(&[0, 0, 0, 0, 1]);
        assert_eq!(
            parse_bytes(&with_note(stub), 16 * MIB),
            Err(KernelProblem::BadNoteSegment { index: 1 })
        );
        // Zero padding after the last note is fine.
        let mut padded = boot_note(1, ENTRY, MIB + PAGE_SIZE);
        padded.extend_from_slice(&[0; 8]);
        assert!(parse_bytes(&with_note(padded), 16 * MIB).is_ok());
    }

    #[test]
    fn eight_byte_aligned_note_segments() {
        // name "lguest\0" (7 bytes) pads to 8 before the descriptor in such a segment.
        let mut note = Vec::new();
        note.extend_from_slice(&7u32.to_le_bytes());
        note.extend_from_slice(&24u32.to_le_bytes());
        note.extend_from_slice(&abi::NOTE_TYPE_BOOT.to_le_bytes());
        note.extend_from_slice(b"lguest\0");
        note.resize(24, 0); // 12 + 7 -> 19, aligned up to 24
        for w in [1, ENTRY, MIB + PAGE_SIZE] {
            note.extend_from_slice(&u64::to_le_bytes(w));
        }
        let mut phs = good_phs();
        phs[1] = Ph::note(note);
        phs[1].align = 8;
        let kernel = parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB).expect("parses");
        assert_eq!(kernel.entry, ENTRY);
    }

    #[test]
    fn cr3_and_entry_checks() {
        let check = |entry, cr3| parse_bytes(&with_note(boot_note(1, entry, cr3)), 16 * MIB);
        assert_eq!(
            check(ENTRY, MIB + 8),
            Err(KernelProblem::Cr3NotAligned(MIB + 8))
        );
        assert_eq!(
            check(ENTRY, 16 * MIB),
            Err(KernelProblem::Cr3OutsideMemory {
                cr3: 16 * MIB,
                mem: 16 * MIB
            })
        );
        assert_eq!(
            check(ENTRY, !(PAGE_SIZE - 1)),
            Err(KernelProblem::Cr3OutsideMemory {
                cr3: !(PAGE_SIZE - 1),
                mem: 16 * MIB
            })
        );
        assert_eq!(
            check(ENTRY, 8 * MIB),
            Err(KernelProblem::Cr3OutsideImage(8 * MIB))
        );
        // The last whole page of the text segment (memsz 3 pages + 100) is fine, the partial one not.
        assert!(check(ENTRY, MIB + 2 * PAGE_SIZE).is_ok());
        assert_eq!(
            check(ENTRY, MIB + 3 * PAGE_SIZE),
            Err(KernelProblem::Cr3OutsideImage(MIB + 3 * PAGE_SIZE))
        );
        assert_eq!(
            check(0x8000_0000_0000, MIB),
            Err(KernelProblem::EntryNotCanonical(0x8000_0000_0000))
        );
        assert!(check(0x10_0000, MIB).is_ok());
    }

    #[test]
    fn segment_outside_memory() {
        let bytes = ElfBuilder::new(good_phs()).build();
        // The bss segment ends at 2 MiB + 8 KiB.
        let err = parse_bytes(&bytes, 2 * MIB).unwrap_err();
        assert_eq!(
            err,
            KernelProblem::SegmentOutsideMemory {
                index: 2,
                start: 2 * MIB,
                memsz: 2 * PAGE_SIZE,
                mem: 2 * MIB
            }
        );
        let msg = Error::BadKernel {
            path: "k".into(),
            problem: err,
        }
        .to_string();
        assert_eq!(
            msg,
            "'k' has segment 2 at guest-physical 0x200000, ending at 0x202000, outside the guest's \
             2m of memory (give the guest more memory?)"
        );
        // An end that overflows.
        let mut phs = good_phs();
        phs[2].paddr = u64::MAX - 10;
        assert!(matches!(
            parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB),
            Err(KernelProblem::SegmentOutsideMemory { index: 2, .. })
        ));
        assert!(parse_bytes(&bytes, 2 * MIB + 2 * PAGE_SIZE).is_ok());
    }

    #[test]
    fn segment_below_one_mib() {
        let mut phs = good_phs();
        phs[2].paddr = 0x2000;
        let err = parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB).unwrap_err();
        assert_eq!(
            err,
            KernelProblem::SegmentBelowReserved {
                index: 2,
                start: 0x2000
            }
        );
        assert!(err.to_string().contains("below 0x100000"));
    }

    #[test]
    fn filesz_over_memsz() {
        let mut phs = good_phs();
        phs[2].memsz = 4;
        assert_eq!(
            parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB),
            Err(KernelProblem::FileszOverMemsz {
                index: 2,
                filesz: 10,
                memsz: 4
            })
        );
    }

    #[test]
    fn overlapping_segments() {
        let mut phs = good_phs();
        phs[2].paddr = MIB + 2 * PAGE_SIZE;
        assert_eq!(
            parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB),
            Err(KernelProblem::SegmentsOverlap {
                first: 0,
                second: 2
            })
        );
    }

    #[test]
    fn truncated_files() {
        let bytes = ElfBuilder::new(good_phs()).build();
        // Cut inside the last segment's data.
        let cut = &bytes[..bytes.len() - 4];
        assert!(matches!(
            parse_bytes(cut, 16 * MIB),
            Err(KernelProblem::Truncated { ref what, .. }) if what == "segment 2"
        ));
        // Cut inside the program header table.
        assert!(matches!(
            parse_bytes(&bytes[..EHDR_SIZE + 10], 16 * MIB),
            Err(KernelProblem::Truncated { ref what, .. }) if what == "program header table"
        ));
        // Cut inside the ELF header.
        assert!(matches!(
            parse_bytes(&bytes[..20], 16 * MIB),
            Err(KernelProblem::Truncated { ref what, end: 64, file_size: 20 }) if what == "ELF header"
        ));
        // An offset far past the end, and one that overflows.
        let mut phs = good_phs();
        phs[0].offset = Some(u64::MAX - 1);
        assert!(matches!(
            parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB),
            Err(KernelProblem::Truncated { end: u64::MAX, .. })
        ));
        let mut phs = good_phs();
        phs[1].filesz = Some(1 << 40);
        assert!(matches!(
            parse_bytes(&ElfBuilder::new(phs).build(), 16 * MIB),
            Err(KernelProblem::Truncated { ref what, .. }) if what == "PT_NOTE segment 1"
        ));
        assert_eq!(parse_bytes(&[], 16 * MIB), Err(KernelProblem::NotElf));
    }

    #[test]
    fn wrong_class_machine_type() {
        let good = ElfBuilder::new(good_phs());
        let mut b = good.clone();
        b.class = 1;
        assert_eq!(
            parse_bytes(&b.build(), 16 * MIB),
            Err(KernelProblem::NotElf64)
        );
        let mut b = good.clone();
        b.data = 2;
        assert_eq!(
            parse_bytes(&b.build(), 16 * MIB),
            Err(KernelProblem::BigEndian)
        );
        let mut b = good.clone();
        b.machine = 183;
        assert_eq!(
            parse_bytes(&b.build(), 16 * MIB),
            Err(KernelProblem::WrongMachine(183))
        );
        let mut b = good.clone();
        b.e_type = 3;
        assert_eq!(
            parse_bytes(&b.build(), 16 * MIB),
            Err(KernelProblem::NotExecutable(3))
        );
        let mut b = good.clone();
        b.phentsize = 32;
        assert_eq!(
            parse_bytes(&b.build(), 16 * MIB),
            Err(KernelProblem::BadProgramHeaderSize(32))
        );
        let mut b = good;
        b.phs.retain(|p| p.p_type != PT_LOAD);
        assert_eq!(
            parse_bytes(&b.build(), 16 * MIB),
            Err(KernelProblem::NoLoadSegments)
        );
    }

    #[test]
    fn bzimage_and_other_files() {
        let mut bz = vec![0u8; 0x400];
        bz[..2].copy_from_slice(b"MZ");
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(parse_bytes(&bz, 16 * MIB), Err(KernelProblem::BzImage));
        let msg = Error::BadKernel {
            path: "bzImage".into(),
            problem: KernelProblem::BzImage,
        }
        .to_string();
        assert!(msg.starts_with("'bzImage' is a bzImage"), "{msg}");
        assert!(msg.contains("uncompressed vmlinux ELF"), "{msg}");
        assert_eq!(
            parse_bytes(b"#!/bin/sh\necho hi\n", 16 * MIB),
            Err(KernelProblem::NotElf)
        );
    }

    #[test]
    fn initrd_placement() {
        // 16 MiB guest, kernel ending at 2 MiB + 100: the floor is 2 MiB + 4 KiB + 1 MiB.
        let floor = 3 * MIB + PAGE_SIZE;
        assert_eq!(
            place_initrd(16 * MIB, 2 * MIB + 100, 4096),
            Ok(16 * MIB - 4096)
        );
        assert_eq!(
            place_initrd(16 * MIB, 2 * MIB + 100, 5000),
            Ok(16 * MIB - 8192)
        );
        assert_eq!(
            place_initrd(16 * MIB, 2 * MIB + 100, 16 * MIB - floor),
            Ok(floor)
        );
        assert_eq!(
            place_initrd(16 * MIB, 2 * MIB + 100, 16 * MIB - floor + 1),
            Err(16 * MIB - floor)
        );
        assert_eq!(place_initrd(2 * MIB, 2 * MIB, 1), Err(0));
        assert_eq!(place_initrd(16 * MIB, u64::MAX, 1), Err(0));
        assert_eq!(place_initrd(16 * MIB, 0, 0), Ok(16 * MIB));
    }

    #[test]
    fn initrd_loads_at_the_top_or_refuses_to_overlap_the_kernel() {
        let bytes = ElfBuilder::new(good_phs()).build();
        let mem = GuestMemory::new(8 * MIB).expect("map");
        let mut image: &[u8] = &bytes;
        let kernel = load_kernel(&mut image, Path::new("vmlinux"), &mem).expect("loads");

        let initrd_bytes = vec![0x5au8; 10_000];
        let mut initrd: &[u8] = &initrd_bytes;
        let placed = load_initrd(&mut initrd, Path::new("initrd"), &mem, kernel.end).expect("fits");
        assert_eq!(placed.size, 10_000);
        assert_eq!(placed.gpa, 8 * MIB - 3 * PAGE_SIZE);
        let mut back = vec![0u8; 10_000];
        mem.read(placed.gpa, &mut back).expect("read");
        assert_eq!(back, initrd_bytes);

        // Kernel ends at 2 MiB + 8 KiB: 1 MiB gap, so 8 MiB - 3 MiB - 8 KiB fit.
        let room = 8 * MIB - (3 * MIB + 2 * PAGE_SIZE);
        let big = vec![0u8; room as usize + 1];
        let mut big_image: &[u8] = &big;
        let err = load_initrd(&mut big_image, Path::new("initrd"), &mem, kernel.end).unwrap_err();
        assert!(
            matches!(err, Error::InitrdTooBig { size, room: r, .. } if size == room + 1 && r == room),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("initrd 'initrd' ("), "{err}");
        let exact = vec![1u8; room as usize];
        let mut exact_image: &[u8] = &exact;
        let placed = load_initrd(&mut exact_image, Path::new("initrd"), &mem, kernel.end)
            .expect("exactly fits");
        assert_eq!(placed.gpa, 3 * MIB + 2 * PAGE_SIZE);
    }

    /// A real ELF from the system's assembler and linker (skipped where there is no `cc`): a
    /// kernel-style image linked at 0xffffffff80100000, loaded at 1 MiB, with the boot note in its
    /// own section and PT_NOTE segment.
    #[test]
    fn toolchain_built_guest() {
        use std::process::Command;
        let dir = std::env::temp_dir().join(format!("lguest-tinyguest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let asm = format!(
            r#"
            .section .note.lguest, "a"
            .balign 4
            .long 7, 24, {note_type:#x}
            .asciz "lguest"
            .balign 4
            .quad {version}, _start, pml4 - 0xffffffff80000000

            .text
            .globl _start
        _start:
            mov $25, %eax
            int $0x1f
            hlt

            .data
            .balign 4096
        pml4:
            .fill 512, 8, 0

            .bss
            .balign 4096
        stack:
            .skip 16384
            "#,
            note_type = abi::NOTE_TYPE_BOOT,
            version = abi::VERSION,
        );
        let script = r#"
            ENTRY(_start)
            PHDRS { text PT_LOAD; data PT_LOAD; note PT_NOTE; }
            SECTIONS {
                . = 0xffffffff80100000;
                .text : AT(ADDR(.text) - 0xffffffff80000000) { *(.text) } :text
                .note.lguest : AT(ADDR(.note.lguest) - 0xffffffff80000000) { *(.note.lguest) } :text :note
                . = ALIGN(4096);
                .data : AT(ADDR(.data) - 0xffffffff80000000) { *(.data) } :data
                .bss : AT(ADDR(.bss) - 0xffffffff80000000) { *(.bss) } :data
                /DISCARD/ : { *(.note.gnu.property) *(.comment) }
            }
        "#;
        std::fs::write(dir.join("guest.S"), asm).expect("write");
        std::fs::write(dir.join("guest.ld"), script).expect("write");
        let built = Command::new("cc")
            .current_dir(&dir)
            .args([
                "-nostdlib",
                "-static",
                "-no-pie",
                "-Wl,--build-id=none",
                "-Wl,-T,guest.ld",
                "-o",
                "guest",
                "guest.S",
            ])
            .output();
        let out = match built {
            Ok(out) => out,
            Err(e) => {
                eprintln!("skipped: no cc ({e})");
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
        };
        assert!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(dir.join("guest")).expect("read");
        let _ = std::fs::remove_dir_all(&dir);

        let mem = GuestMemory::new(4 * MIB).expect("map");
        let mut image: &[u8] = &bytes;
        let kernel = load_kernel(&mut image, Path::new("guest"), &mem).expect("loads");
        assert_eq!(kernel.entry, 0xffff_ffff_8010_0000);
        assert_eq!(kernel.cr3 % PAGE_SIZE, 0);
        assert!(kernel.cr3 > MIB && kernel.cr3 < kernel.end);
        assert!(kernel.end >= kernel.cr3 + PAGE_SIZE + 16384);
        // mov $25, %eax; int $0x1f; hlt at guest-physical 1 MiB.
        let mut code = [0u8; 8];
        mem.read(MIB, &mut code).expect("read");
        assert_eq!(code, [0xb8, 25, 0, 0, 0, 0xcd, 0x1f, 0xf4]);
    }
}
