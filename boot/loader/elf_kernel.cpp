#include "boot/loader/elf_kernel.hpp"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "boot/loader/hvm_start_info.hpp"
#include "boot/x86_layout.hpp"

namespace kestrel::boot {

namespace {

// Copies a header out of `file` (the ELF file or one note segment) so no unaligned or out-of-range access can happen.
template <class T>
Result<T> read_at(std::span<const uint8_t> file, uint64_t off, std::string_view what) {
    if (off > file.size() || sizeof(T) > file.size() - off)
        return fail("{} at offset {:#x} (+{:#x}) is past the end of the {} bytes holding it",
                    what, off, sizeof(T), file.size());
    T v;
    std::memcpy(&v, file.data() + off, sizeof v);
    return v;
}

bool range_in_file(std::span<const uint8_t> file, uint64_t off, uint64_t len) {
    return off <= file.size() && len <= file.size() - off;
}

uint64_t align_up4(uint64_t v) { return (v + 3) & ~uint64_t{3}; }

// The two ELF classes differ only in field widths (gABI "ELF Header", "Program Header"):
// each is read with its own structs and widened to these, so every check below is written
// once and applies to both.
struct ElfHeader {
    uint64_t entry;
    uint64_t phoff;
    uint16_t phnum;
};
struct ProgramHeader {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz;
};

struct Elf32Class {
    using Ehdr = Elf32_Ehdr;
    using Phdr = Elf32_Phdr;
};
struct Elf64Class {
    using Ehdr = Elf64_Ehdr;
    using Phdr = Elf64_Phdr;
};

// Xen's PVH ABI (docs/misc/pvh.pandoc) fixes the entry state through the note, not the ELF
// class: ELF64 kernels are x86-64 (Linux vmlinux); ELF32 ones are i386 images or x32-style
// EM_X86_64 ones (`ld -m elf32_x86_64`), both of which QEMU's PVH loader (load_elfboot via
// load_elf with EM_X86_64, which also takes EM_386) and Xen's libxenguest accept.
Result<void> check_machine(unsigned char elf_class, uint16_t machine) {
    if (elf_class == ELFCLASS64 && machine != EM_X86_64)
        return fail("ELF machine is {}, expected EM_X86_64 ({})", machine, EM_X86_64);
    if (elf_class == ELFCLASS32 && machine != EM_386 && machine != EM_X86_64)
        return fail("ELF32 machine is {}, expected EM_386 ({}) or EM_X86_64 ({})", machine, EM_386,
                    EM_X86_64);
    return {};
}

template <class C>
Result<ElfHeader> read_ehdr(std::span<const uint8_t> file) {
    auto eh = TRY(read_at<typename C::Ehdr>(file, 0, "ELF header"));
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return fail("ELF data encoding is {}, expected little-endian ({})", eh.e_ident[EI_DATA],
                    ELFDATA2LSB);
    TRY(check_machine(eh.e_ident[EI_CLASS], eh.e_machine));
    if (eh.e_type != ET_EXEC)
        return fail("ELF type is {}, expected ET_EXEC ({})", eh.e_type, ET_EXEC);
    if (eh.e_phentsize != sizeof(typename C::Phdr))
        return fail("ELF e_phentsize is {}, expected {}", eh.e_phentsize, sizeof(typename C::Phdr));
    if (eh.e_phnum == 0) return fail("ELF has no program headers");
    uint64_t ph_bytes = uint64_t{eh.e_phnum} * sizeof(typename C::Phdr);
    if (!range_in_file(file, eh.e_phoff, ph_bytes))
        return fail("ELF file is {} bytes: program headers at {:#x} (+{:#x}) are past its end",
                    file.size(), uint64_t{eh.e_phoff}, ph_bytes);
    return ElfHeader{eh.e_entry, eh.e_phoff, eh.e_phnum};
}

template <class C>
Result<ProgramHeader> read_phdr(std::span<const uint8_t> file, const ElfHeader& eh, unsigned i) {
    auto ph = TRY(read_at<typename C::Phdr>(file, eh.phoff + i * sizeof(typename C::Phdr),
                                            "program header"));
    return ProgramHeader{ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz};
}

// gABI "Note Section": namesz, descsz, type, then name and desc, each padded to 4 bytes.
// Elf32_Nhdr and Elf64_Nhdr are the same three 32-bit words, so one walk serves both classes.
static_assert(sizeof(Elf32_Nhdr) == sizeof(Elf64_Nhdr));
Result<std::optional<uint32_t>> find_pvh_entry(std::span<const uint8_t> notes) {
    std::optional<uint32_t> entry;
    uint64_t pos = 0;
    while (pos < notes.size()) {
        auto nh = TRY(read_at<Elf64_Nhdr>(notes, pos, "ELF note header"));
        uint64_t name_off = pos + sizeof nh;
        uint64_t desc_off = name_off + align_up4(nh.n_namesz);
        uint64_t next = desc_off + align_up4(nh.n_descsz);  // u32 sizes: no u64 overflow
        if (next > notes.size())
            return fail("ELF note at segment offset {:#x} (namesz {}, descsz {}) runs past its "
                        "PT_NOTE segment of {:#x} bytes",
                        pos, nh.n_namesz, nh.n_descsz, notes.size());
        std::string_view name(reinterpret_cast<const char*>(notes.data() + name_off),
                              nh.n_namesz);
        if (name == std::string_view("Xen\0", 4) && nh.n_type == kXenElfnotePhys32Entry) {
            // Linux emits this as a pointer-sized value (8 bytes); Xen documents 4.
            uint64_t value = 0;
            if (nh.n_descsz == 4) {
                uint32_t v32;
                std::memcpy(&v32, notes.data() + desc_off, 4);
                value = v32;
            } else if (nh.n_descsz == 8) {
                std::memcpy(&value, notes.data() + desc_off, 8);
            } else {
                return fail("Xen PHYS32_ENTRY note has {} bytes of data, expected 4 or 8",
                            nh.n_descsz);
            }
            if (value > UINT32_MAX)
                return fail("Xen PHYS32_ENTRY {:#x} is not a 32-bit address", value);
            entry = static_cast<uint32_t>(value);
        }
        pos = next;
    }
    return entry;
}

bool inside_a_segment(const std::vector<ElfSegment>& segs, uint64_t addr) {
    return std::any_of(segs.begin(), segs.end(), [&](const ElfSegment& s) {
        return addr >= s.paddr && addr - s.paddr < s.memsz;
    });
}

}  // namespace

bool looks_like_elf(std::span<const uint8_t> file) {
    return file.size() >= SELFMAG && std::memcmp(file.data(), ELFMAG, SELFMAG) == 0;
}

Result<ElfKernel> parse_elf_kernel(std::span<const uint8_t> file) {
    if (!looks_like_elf(file))
        return fail("not an ELF file: magic is not 7f 45 4c 46");
    if (file.size() <= EI_CLASS) return fail("ELF file is {} bytes: no class byte", file.size());
    const unsigned char elf_class = file[EI_CLASS];
    if (elf_class != ELFCLASS32 && elf_class != ELFCLASS64)
        return fail("ELF class is {}, expected ELFCLASS32 ({}) or ELFCLASS64 ({})", elf_class,
                    ELFCLASS32, ELFCLASS64);
    const bool is64 = elf_class == ELFCLASS64;
    auto eh = TRY(is64 ? read_ehdr<Elf64Class>(file) : read_ehdr<Elf32Class>(file));

    ElfKernel k{};
    k.entry = eh.entry;
    k.elf_class = elf_class;
    for (unsigned i = 0; i < eh.phnum; ++i) {
        auto ph = TRY(is64 ? read_phdr<Elf64Class>(file, eh, i) : read_phdr<Elf32Class>(file, eh, i));
        if (ph.type != PT_LOAD && ph.type != PT_NOTE) continue;
        if (!range_in_file(file, ph.offset, ph.filesz))
            return fail("ELF file is {} bytes: segment {} data at offset {:#x} (+{:#x}) is past "
                        "its end",
                        file.size(), i, ph.offset, ph.filesz);
        auto data = file.subspan(ph.offset, ph.filesz);
        if (ph.type == PT_NOTE) {
            auto pvh = TRY(find_pvh_entry(data));
            if (pvh) k.pvh_entry = pvh;
            continue;
        }
        if (ph.filesz > ph.memsz)
            return fail("ELF segment {}: p_filesz {:#x} exceeds p_memsz {:#x}", i, ph.filesz,
                        ph.memsz);
        if (ph.memsz == 0) continue;
        uint64_t end;
        // Both boot paths run with 0..4 GiB identity-mapped (or unpaged): nothing may sit higher.
        if (__builtin_add_overflow(ph.paddr, ph.memsz, &end) || end > x86::kMmioHoleEnd)
            return fail("ELF segment {}: [{:#x}, +{:#x}) does not end below 4 GiB", i,
                        ph.paddr, ph.memsz);
        // Below 1 MiB live the VMM's boot structures (x86_layout.hpp).
        if (ph.paddr < x86::kHighMemStart)
            return fail("ELF segment {}: physical address {:#x} is below 1 MiB ({:#x})", i,
                        ph.paddr, x86::kHighMemStart);
        k.segments.push_back({ph.paddr, data, ph.memsz});
        k.end = std::max(k.end, end);
    }
    if (k.segments.empty()) return fail("ELF has no loadable (PT_LOAD) segment");
    // Without the note kestrel enters e_entry through the 64-bit Linux boot protocol, which
    // an ELF32 image cannot take (QEMU refuses any ELF without the note).
    if (!is64 && !k.pvh_entry)
        return fail("ELF32 image has no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY, type {}): a "
                    "32-bit image can only be entered through PVH",
                    kXenElfnotePhys32Entry);
    if (!inside_a_segment(k.segments, k.entry) && !k.pvh_entry)
        return fail("ELF entry point {:#x} is outside every PT_LOAD segment", k.entry);
    if (k.pvh_entry && !inside_a_segment(k.segments, *k.pvh_entry))
        return fail("Xen PVH entry point {:#x} is outside every PT_LOAD segment", *k.pvh_entry);
    return k;
}

}  // namespace kestrel::boot
