// Parsing of an ELF64 x86-64 kernel (vmlinux or a small test guest) into what a loader needs:
// its PT_LOAD segments by physical address, the ELF entry point and, when present, the Xen
// PVH 32-bit entry. Checks only the file's own consistency; fitting into guest RAM is the
// loader's job. Spec: System V gABI "ELF Header", "Program Header", "Note Section"; Xen
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
};

bool looks_like_elf(std::span<const uint8_t> file);
Result<ElfKernel> parse_elf_kernel(std::span<const uint8_t> file);

}  // namespace kestrel::boot
