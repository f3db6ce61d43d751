// Parsing of an x86 kernel in ELF (an ELF64 vmlinux, or an ELF32/ELF64 PVH image such as a
// test guest or unikernel) into what a loader needs: its PT_LOAD segments by physical
// address, the ELF entry point and, when present, the Xen PVH 32-bit entry. Both classes get
// the same checks; an ELF32 image must carry the PVH note. Checks only the file's own
// consistency and that segments stay clear of the VMM's area below 1 MiB and below 4 GiB;
// fitting into guest RAM is the loader's job. Spec: System V gABI "ELF Header", "Program Header", "Note Section"; Xen
// public/elfnote.h for the PVH note.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel::boot {

struct ElfSegment {
    uint64_t paddr;
    std::span<const uint8_t> file_bytes;  // p_filesz bytes from the file
    uint64_t memsz;                       // >= file_bytes.size(); the rest is zeroed
};

struct ElfKernel {
    std::vector<ElfSegment> segments;     // PT_LOAD with p_memsz > 0, in file order
    uint64_t entry;                       // e_entry, inside one segment
    std::optional<uint32_t> pvh_entry;    // XEN_ELFNOTE_PHYS32_ENTRY, inside one segment
    uint64_t end;                         // highest paddr + memsz over all segments
    uint8_t elf_class;                    // ELFCLASS32 or ELFCLASS64
};

bool looks_like_elf(std::span<const uint8_t> file);
Result<ElfKernel> parse_elf_kernel(std::span<const uint8_t> file);

}  // namespace kestrel::boot
