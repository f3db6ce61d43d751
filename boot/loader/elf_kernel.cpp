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

Result<void> check_ehdr(const Elf64_Ehdr& eh) {
    if (eh.e_ident[EI_CLASS] != ELFCLASS64)
        return fail("ELF class is {}, expected ELFCLASS64 ({})", eh.e_ident[EI_CLASS], ELFCLASS64);
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return fail("ELF data encoding is {}, expected little-endian ({})", eh.e_ident[EI_DATA],
                    ELFDATA2LSB);
    if (eh.e_machine != EM_X86_64)
        return fail("ELF machine is {}, expected EM_X86_64 ({})", eh.e_machine, EM_X86_64);
    if (eh.e_type != ET_EXEC)
        return fail("ELF type is {}, expected ET_EXEC ({})", eh.e_type, ET_EXEC);
    if (eh.e_phentsize != sizeof(Elf64_Phdr))
        return fail("ELF e_phentsize is {}, expected {}", eh.e_phentsize, sizeof(Elf64_Phdr));
    if (eh.e_phnum == 0) return fail("ELF has no program headers");
    return {};
}

// gABI "Note Section": namesz, descsz, type, then name and desc, each padded to 4 bytes.
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
    auto eh = TRY(read_at<Elf64_Ehdr>(file, 0, "ELF header"));
    TRY(check_ehdr(eh));
    uint64_t ph_bytes = uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
    if (!range_in_file(file, eh.e_phoff, ph_bytes))
        return fail("ELF file is {} bytes: program headers at {:#x} (+{:#x}) are past its end",
                    file.size(), eh.e_phoff, ph_bytes);

    ElfKernel k{};
    k.entry = eh.e_entry;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        auto ph = TRY(read_at<Elf64_Phdr>(file, eh.e_phoff + i * sizeof(Elf64_Phdr),
                                          "program header"));
        if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE) continue;
        if (!range_in_file(file, ph.p_offset, ph.p_filesz))
            return fail("ELF file is {} bytes: segment {} data at offset {:#x} (+{:#x}) is past "
                        "its end",
                        file.size(), i, ph.p_offset, ph.p_filesz);
        auto data = file.subspan(ph.p_offset, ph.p_filesz);
        if (ph.p_type == PT_NOTE) {
            auto pvh = TRY(find_pvh_entry(data));
            if (pvh) k.pvh_entry = pvh;
            continue;
        }
        if (ph.p_filesz > ph.p_memsz)
            return fail("ELF segment {}: p_filesz {:#x} exceeds p_memsz {:#x}", i, ph.p_filesz,
                        ph.p_memsz);
        if (ph.p_memsz == 0) continue;
        uint64_t end;
        // Both boot paths run with 0..4 GiB identity-mapped (or unpaged): nothing may sit higher.
        if (__builtin_add_overflow(ph.p_paddr, ph.p_memsz, &end) || end > x86::kMmioHoleEnd)
            return fail("ELF segment {}: [{:#x}, +{:#x}) does not end below 4 GiB", i,
                        ph.p_paddr, ph.p_memsz);
        // Below 1 MiB live the VMM's boot structures (x86_layout.hpp).
        if (ph.p_paddr < x86::kHighMemStart)
            return fail("ELF segment {}: physical address {:#x} is below 1 MiB ({:#x})", i,
                        ph.p_paddr, x86::kHighMemStart);
        k.segments.push_back({ph.p_paddr, data, ph.p_memsz});
        k.end = std::max(k.end, end);
    }
    if (k.segments.empty()) return fail("ELF has no loadable (PT_LOAD) segment");
    if (!inside_a_segment(k.segments, k.entry) && !k.pvh_entry)
        return fail("ELF entry point {:#x} is outside every PT_LOAD segment", k.entry);
    if (k.pvh_entry && !inside_a_segment(k.segments, *k.pvh_entry))
        return fail("Xen PVH entry point {:#x} is outside every PT_LOAD segment", *k.pvh_entry);
    return k;
}

}  // namespace kestrel::boot
