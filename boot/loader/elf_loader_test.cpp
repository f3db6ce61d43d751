// prepare_boot() on ELF kernels: tiny synthetic images for each rule, the real Debian vmlinux
// for the PVH path, and corrupt images that must leave guest memory untouched.
#include <elf.h>

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "boot/loader/boot_loader.hpp"
#include "boot/loader/boot_params.hpp"
#include "boot/loader/hvm_start_info.hpp"
#include "boot/loader/loader_test_support.hpp"
#include "boot/x86_layout.hpp"

using namespace kestrel;
using namespace kestrel::boot;
using namespace kestrel::boot::test;

namespace {

struct Seg {
    uint64_t paddr;
    std::vector<uint8_t> data;
    uint64_t memsz;
};

std::vector<uint8_t> xen_note(uint32_t type, std::vector<uint8_t> desc) {
    std::vector<uint8_t> n(12);
    store<uint32_t>(n, 0, 4);
    store<uint32_t>(n, 4, static_cast<uint32_t>(desc.size()));
    store<uint32_t>(n, 8, type);
    n.insert(n.end(), {'X', 'e', 'n', 0});
    n.insert(n.end(), desc.begin(), desc.end());
    n.resize((n.size() + 3) & ~size_t{3});
    return n;
}

std::vector<uint8_t> pvh_note(uint32_t entry) {
    std::vector<uint8_t> d(4);
    store(d, 0, entry);
    return xen_note(kXenElfnotePhys32Entry, d);
}

// ELF header, program headers (PT_LOADs, then an optional PT_NOTE), then segment data.
std::vector<uint8_t> make_elf(const std::vector<Seg>& segs, uint64_t entry,
                              const std::optional<std::vector<uint8_t>>& note = std::nullopt) {
    size_t nph = segs.size() + (note ? 1 : 0);
    std::vector<uint8_t> f(sizeof(Elf64_Ehdr) + nph * sizeof(Elf64_Phdr));
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = static_cast<Elf64_Half>(nph);
    store(f, 0, eh);
    auto add = [&](size_t i, uint32_t type, uint64_t paddr, const std::vector<uint8_t>& data,
                   uint64_t memsz) {
        Elf64_Phdr ph{};
        ph.p_type = type;
        ph.p_offset = f.size();
        ph.p_paddr = ph.p_vaddr = paddr;
        ph.p_filesz = data.size();
        ph.p_memsz = memsz;
        ph.p_align = 4;
        store(f, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), ph);
        f.insert(f.end(), data.begin(), data.end());
    };
    for (size_t i = 0; i < segs.size(); ++i)
        add(i, PT_LOAD, segs[i].paddr, segs[i].data, segs[i].memsz);
    if (note) add(segs.size(), PT_NOTE, 0, *note, note->size());
    return f;
}

// The same layout in ELFCLASS32 (gABI 32-bit structures), as `ld -m elf_i386` emits it.
std::vector<uint8_t> make_elf32(const std::vector<Seg>& segs, uint32_t entry,
                                const std::optional<std::vector<uint8_t>>& note = std::nullopt,
                                uint16_t machine = EM_386) {
    size_t nph = segs.size() + (note ? 1 : 0);
    std::vector<uint8_t> f(sizeof(Elf32_Ehdr) + nph * sizeof(Elf32_Phdr));
    Elf32_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS32;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = machine;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = sizeof(Elf32_Ehdr);
    eh.e_ehsize = sizeof(Elf32_Ehdr);
    eh.e_phentsize = sizeof(Elf32_Phdr);
    eh.e_phnum = static_cast<Elf32_Half>(nph);
    store(f, 0, eh);
    auto add = [&](size_t i, uint32_t type, uint64_t paddr, const std::vector<uint8_t>& data,
                   uint64_t memsz) {
        Elf32_Phdr ph{};
        ph.p_type = type;
        ph.p_offset = static_cast<Elf32_Off>(f.size());
        ph.p_paddr = ph.p_vaddr = static_cast<Elf32_Addr>(paddr);
        ph.p_filesz = static_cast<Elf32_Word>(data.size());
        ph.p_memsz = static_cast<Elf32_Word>(memsz);
        ph.p_align = 4;
        store(f, sizeof(Elf32_Ehdr) + i * sizeof(Elf32_Phdr), ph);
        f.insert(f.end(), data.begin(), data.end());
    };
    for (size_t i = 0; i < segs.size(); ++i)
        add(i, PT_LOAD, segs[i].paddr, segs[i].data, segs[i].memsz);
    if (note) add(segs.size(), PT_NOTE, 0, *note, note->size());
    return f;
}

Elf32_Phdr phdr32(const std::vector<uint8_t>& f, size_t i) {
    return load<Elf32_Phdr>(f, sizeof(Elf32_Ehdr) + i * sizeof(Elf32_Phdr));
}
void set_phdr32(std::vector<uint8_t>& f, size_t i, const Elf32_Phdr& ph) {
    store(f, sizeof(Elf32_Ehdr) + i * sizeof(Elf32_Phdr), ph);
}

Elf64_Phdr phdr(const std::vector<uint8_t>& f, size_t i) {
    return load<Elf64_Phdr>(f, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr));
}
void set_phdr(std::vector<uint8_t>& f, size_t i, const Elf64_Phdr& ph) {
    store(f, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), ph);
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
    return v;
}

const std::vector<uint8_t>& real_vmlinux() {
    static const std::vector<uint8_t> v = read_kernel_artifact("vmlinux");
    return v;
}

std::string read_cstring(const GuestMemory& mem, uint64_t addr) {
    std::string s;
    for (char c; (c = static_cast<char>(guest<uint8_t>(mem, addr))) != 0; ++addr) s += c;
    return s;
}

// Runs prepare_boot, expects an error mentioning `needle`, and a still all-zero guest.
void expect_refused(GuestMemory& mem, const BootInputs& in, const std::string& needle) {
    auto r = prepare_boot(mem, in);
    REQUIRE_FALSE(r);
    INFO("error: " << r.error().what());
    CHECK(r.error().message.find(needle) != std::string::npos);
    CHECK(all_zero(mem));
}

}  // namespace

TEST_CASE("ELF without PVH note: Linux64 entry, segments loaded, tail zeroed, zero page filled") {
    auto mem = make_memory(64 * kMiB);
    auto text = pattern(0x3000, 1);
    auto data = pattern(0x800, 9);
    auto elf = make_elf({{0x200000, text, 0x3000}, {0x400000, data, 0x2000}}, 0x200100);
    REQUIRE(mem.fill(GuestAddress(0x400000), 0x2000, 0xaa));  // stale bytes the tail must clear
    auto initrd = pattern(0x1801, 3);
    auto r = prepare_boot(mem, {elf, initrd, "console=ttyS0 quiet", GuestAddress(0xe0000)});
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    CHECK(r->mode == EntryMode::Linux64);
    CHECK(r->entry.raw == 0x200100);
    CHECK(r->boot_info.raw == x86::kZeroPage);
    CHECK(r->kernel_end.raw == 0x402000);
    REQUIRE(r->initrd);
    CHECK(r->initrd->first.raw == 64 * kMiB - 0x2000);
    CHECK(r->initrd->second == 0x1801);

    CHECK(guest<uint8_t>(mem, 0x200000 + 0x2fff) == text[0x2fff]);
    CHECK(guest<uint8_t>(mem, 0x400000 + 0x7ff) == data[0x7ff]);
    CHECK(guest<uint8_t>(mem, 0x400000 + 0x800) == 0);
    CHECK(guest<uint8_t>(mem, 0x400000 + 0x1fff) == 0);
    CHECK(guest<uint8_t>(mem, 64 * kMiB - 0x2000 + 0x1800) == initrd[0x1800]);

    auto bp = guest<BootParams>(mem, x86::kZeroPage);
    CHECK(val(bp.hdr.boot_flag) == kBootFlag);
    CHECK(val(bp.hdr.header) == kHeaderMagic);
    CHECK(val(bp.hdr.type_of_loader) == 0xff);
    CHECK(val(bp.hdr.cmd_line_ptr) == x86::kCmdline);
    CHECK(val(bp.hdr.cmdline_size) == 19);
    CHECK(val(bp.hdr.ramdisk_image) == 64 * kMiB - 0x2000);
    CHECK(val(bp.hdr.ramdisk_size) == 0x1801);
    CHECK(val(bp.acpi_rsdp_addr) == 0xe0000);
    CHECK(val(bp.e820_entries) == 4);
    CHECK(val(bp.e820_table[2].addr) == 0x100000);
    CHECK(val(bp.e820_table[2].size) == 63 * kMiB);
    CHECK(val(bp.e820_table[2].type) == 1);
    CHECK(read_cstring(mem, x86::kCmdline) == "console=ttyS0 quiet");
}

TEST_CASE("ELF with a 4-byte PVH note: Pvh32 entry and hvm_start_info without modules") {
    auto mem = make_memory(32 * kMiB);
    auto elf = make_elf({{0x100000, pattern(0x1000, 5), 0x1000}}, 0x100000, pvh_note(0x100040));
    auto r = prepare_boot(mem, {elf, {}, "", GuestAddress(0)});
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    CHECK(r->mode == EntryMode::Pvh32);
    CHECK(r->entry.raw == 0x100040);
    CHECK(r->boot_info.raw == x86::kPvhStartInfo);
    CHECK_FALSE(r->initrd);
    auto si = guest<HvmStartInfo>(mem, x86::kPvhStartInfo);
    CHECK(si.magic == kHvmStartMagic);
    CHECK(si.nr_modules == 0);
    CHECK(si.modlist_paddr == 0);
    CHECK(si.rsdp_paddr == 0);
    CHECK(si.memmap_entries == 4);
    CHECK(guest<uint8_t>(mem, x86::kCmdline) == 0);
    CHECK(guest<uint64_t>(mem, x86::kZeroPage) == 0);  // no zero page on the PVH path
}

TEST_CASE("real Debian vmlinux: PVH entry, hvm_start_info, memmap, initrd module") {
    const auto& kernel = real_vmlinux();
    auto mem = make_memory(256 * kMiB);
    auto initrd = pattern(3 * kMiB + 123, 11);
    const std::string cmdline = "console=ttyS0 reboot=k panic=-1";
    auto r = prepare_boot(mem, {kernel, initrd, cmdline, GuestAddress(0xe0000)});
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    CHECK(r->mode == EntryMode::Pvh32);
    CHECK(r->entry.raw == 0x1000850);
    CHECK(r->boot_info.raw == x86::kPvhStartInfo);
    CHECK(r->kernel_end.raw == 0x3e00000);  // last PT_LOAD: 0x304e000 + 0xdb2000

    // First PT_LOAD: file offset 0x200000 -> paddr 0x1000000.
    auto ph0 = phdr(kernel, 0);
    CHECK(ph0.p_paddr == 0x1000000);
    auto loaded = mem.slice(GuestAddress(ph0.p_paddr), ph0.p_filesz);
    REQUIRE(loaded);
    CHECK(std::memcmp(loaded->data(), kernel.data() + ph0.p_offset, ph0.p_filesz) == 0);

    auto si = guest<HvmStartInfo>(mem, x86::kPvhStartInfo);
    CHECK(si.magic == 0x336ec578);
    CHECK(si.version == 1);
    CHECK(si.cmdline_paddr == x86::kCmdline);
    CHECK(read_cstring(mem, si.cmdline_paddr) == cmdline);
    CHECK(si.rsdp_paddr == 0xe0000);
    REQUIRE(si.nr_modules == 1);
    auto mod = guest<HvmModlistEntry>(mem, si.modlist_paddr);
    REQUIRE(r->initrd);
    CHECK(mod.paddr == r->initrd->first.raw);
    CHECK(mod.size == initrd.size());
    CHECK(mod.paddr % 4096 == 0);
    CHECK(mod.paddr >= r->kernel_end.raw);
    CHECK(mod.paddr + mod.size <= 256 * kMiB);
    CHECK(mod.paddr + mod.size > 256 * kMiB - 4096);  // as high as possible
    CHECK(guest<uint8_t>(mem, mod.paddr + mod.size - 1) == initrd.back());

    REQUIRE(si.memmap_entries == 4);
    CHECK(si.memmap_paddr + 3 * sizeof(HvmMemmapEntry) <= x86::kZeroPage);
    auto e0 = guest<HvmMemmapEntry>(mem, si.memmap_paddr);
    auto e1 = guest<HvmMemmapEntry>(mem, si.memmap_paddr + sizeof(HvmMemmapEntry));
    auto e2 = guest<HvmMemmapEntry>(mem, si.memmap_paddr + 2 * sizeof(HvmMemmapEntry));
    CHECK((e0.addr == 0 && e0.size == x86::kEbdaStart && e0.type == 1));
    CHECK((e1.addr == x86::kEbdaStart && e1.addr + e1.size == 0x100000 && e1.type == 2));
    CHECK((e2.addr == 0x100000 && e2.addr + e2.size == 256 * kMiB && e2.type == 1));
}

TEST_CASE("corrupt ELF images are refused and guest memory stays all zero") {
    auto mem = make_memory(64 * kMiB);
    auto good = make_elf({{0x200000, pattern(0x3000, 1), 0x4000}}, 0x200000, pvh_note(0x200010));
    REQUIRE(prepare_boot(mem, {good, {}, "", {}}));  // the baseline loads...
    mem = make_memory(64 * kMiB);                    // ...then a fresh guest for each refusal

    SUBCASE("truncated at several points") {
        for (size_t cut : {size_t{3}, size_t{20}, sizeof(Elf64_Ehdr), sizeof(Elf64_Ehdr) + 60,
                           good.size() - 0x3000 - 1, good.size() - 1}) {
            CAPTURE(cut);
            std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<long>(cut));
            auto r = prepare_boot(mem, {t, {}, "", {}});
            REQUIRE_FALSE(r);
            CHECK(all_zero(mem));
        }
    }
    SUBCASE("wrong magic / class / machine / type") {
        auto bad = good;
        bad[3] = 'X';
        expect_refused(mem, {bad, {}, "", {}}, "neither ELF");
        bad = good;
        bad[EI_CLASS] = ELFCLASSNONE;
        expect_refused(mem, {bad, {}, "", {}}, "expected ELFCLASS32 (1) or ELFCLASS64 (2)");
        bad[EI_CLASS] = 3;
        expect_refused(mem, {bad, {}, "", {}}, "expected ELFCLASS32 (1) or ELFCLASS64 (2)");
        bad = good;  // an ELF64 image relabelled ELF32: its headers no longer parse
        bad[EI_CLASS] = ELFCLASS32;
        expect_refused(mem, {bad, {}, "", {}}, "e_phentsize");
        bad = good;
        store<uint16_t>(bad, offsetof(Elf64_Ehdr, e_machine), EM_386);
        expect_refused(mem, {bad, {}, "", {}}, "EM_X86_64 (62)");
        bad = good;
        store<uint16_t>(bad, offsetof(Elf64_Ehdr, e_type), ET_DYN);
        expect_refused(mem, {bad, {}, "", {}}, "ET_EXEC");
    }
    SUBCASE("segment offset past the end of the file") {
        auto bad = good;
        auto ph = phdr(bad, 0);
        ph.p_offset = bad.size() - 0x100;
        set_phdr(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "past its end");
        ph.p_offset = ~0ull - 8;  // offset + size wraps
        set_phdr(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "past its end");
    }
    SUBCASE("p_filesz > p_memsz") {
        auto bad = good;
        auto ph = phdr(bad, 0);
        ph.p_memsz = ph.p_filesz - 1;
        set_phdr(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "exceeds p_memsz");
    }
    SUBCASE("huge p_memsz overflowing the address space") {
        auto bad = good;
        auto ph = phdr(bad, 0);
        ph.p_memsz = ~0ull - 0x1000;
        set_phdr(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "below 4 GiB");
    }
    SUBCASE("segment larger than guest RAM") {
        auto bad = good;
        auto ph = phdr(bad, 0);
        ph.p_memsz = 128 * kMiB;
        set_phdr(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "does not fit in guest RAM");
    }
    SUBCASE("overlapping segments") {
        auto bad = make_elf({{0x200000, pattern(0x100, 1), 0x2000}, {0x201000, pattern(0x10, 2), 0x10}},
                            0x200000);
        expect_refused(mem, {bad, {}, "", {}}, "overlaps");
    }
    SUBCASE("segment below 1 MiB would clobber boot structures") {
        auto bad = good;
        auto ph = phdr(bad, 0);
        ph.p_paddr = x86::kZeroPage;
        set_phdr(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "below 1 MiB");
    }
    SUBCASE("bad PVH note: entry outside the image, wrong size, running past its segment") {
        auto bad = make_elf({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000, pvh_note(0x300000));
        expect_refused(mem, {bad, {}, "", {}}, "outside every PT_LOAD");
        bad = make_elf({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000,
                       xen_note(kXenElfnotePhys32Entry, {1, 2}));
        expect_refused(mem, {bad, {}, "", {}}, "expected 4 or 8");
        auto note = pvh_note(0x200000);
        store<uint32_t>(note, 4, 0x1000);  // descsz beyond the segment
        bad = make_elf({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000, note);
        expect_refused(mem, {bad, {}, "", {}}, "runs past its PT_NOTE");
    }
    SUBCASE("initrd that does not fit") {
        std::vector<uint8_t> big(63 * kMiB);
        expect_refused(mem, {good, big, "", {}}, "initrd of 0x3f00000 bytes does not fit");
    }
    SUBCASE("command line too long") {
        expect_refused(mem, {good, {}, std::string(x86::kCmdlineMax, 'a'), {}},
                       "command line is 65536 bytes");
        expect_refused(mem, {good, {}, std::string("a\0b", 3), {}}, "NUL byte");
    }
}

TEST_CASE("ELF32 PVH image (i386 and x32 machine): Pvh32 entry, segments loaded, tail zeroed") {
    for (uint16_t machine : {uint16_t{EM_386}, uint16_t{EM_X86_64}}) {
        CAPTURE(machine);
        auto mem = make_memory(32 * kMiB);
        auto text = pattern(0x1800, 3);
        auto elf = make_elf32({{0x100000, text, 0x3000}}, 0x100000, pvh_note(0x100020), machine);
        REQUIRE(mem.fill(GuestAddress(0x101800), 0x1800, 0xaa));  // the tail must be cleared
        auto initrd = pattern(0x1234, 7);
        auto r = prepare_boot(mem, {elf, initrd, "console=ttyS0", GuestAddress(0xe0000)});
        REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
        CHECK(r->mode == EntryMode::Pvh32);
        CHECK(r->entry.raw == 0x100020);
        CHECK(r->boot_info.raw == x86::kPvhStartInfo);
        CHECK(r->kernel_end.raw == 0x103000);
        CHECK(guest<uint8_t>(mem, 0x100000) == text[0]);
        CHECK(guest<uint8_t>(mem, 0x1017ff) == text[0x17ff]);
        CHECK(guest<uint8_t>(mem, 0x101800) == 0);
        CHECK(guest<uint8_t>(mem, 0x102fff) == 0);
        auto si = guest<HvmStartInfo>(mem, x86::kPvhStartInfo);
        CHECK(si.magic == kHvmStartMagic);
        CHECK(si.nr_modules == 1);
        CHECK(read_cstring(mem, si.cmdline_paddr) == "console=ttyS0");
    }
}

TEST_CASE("ELF32 with an 8-byte PVH note (pointer-sized, as Linux emits it) loads too") {
    auto mem = make_memory(32 * kMiB);
    std::vector<uint8_t> desc(8);
    store<uint64_t>(desc, 0, 0x200010);
    auto elf = make_elf32({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000,
                          xen_note(kXenElfnotePhys32Entry, desc));
    auto r = prepare_boot(mem, {elf, {}, "", {}});
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    CHECK(r->entry.raw == 0x200010);
}

TEST_CASE("corrupt ELF32 images are refused with the ELF64 checks and guest memory stays zero") {
    auto mem = make_memory(64 * kMiB);
    auto good = make_elf32({{0x200000, pattern(0x3000, 1), 0x4000}}, 0x200000, pvh_note(0x200010));
    REQUIRE(prepare_boot(mem, {good, {}, "", {}}));
    mem = make_memory(64 * kMiB);

    SUBCASE("truncated headers, program headers, segment data and note") {
        for (size_t cut : {size_t{5}, size_t{20}, sizeof(Elf32_Ehdr) - 1, sizeof(Elf32_Ehdr) + 16,
                           sizeof(Elf32_Ehdr) + 2 * sizeof(Elf32_Phdr) - 1,
                           good.size() - 0x3000 - 1, good.size() - 1}) {
            CAPTURE(cut);
            std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<long>(cut));
            auto r = prepare_boot(mem, {t, {}, "", {}});
            REQUIRE_FALSE(r);
            CHECK(all_zero(mem));
        }
    }
    SUBCASE("wrong machine, type, data encoding, program header size") {
        auto bad = good;
        store<uint16_t>(bad, offsetof(Elf32_Ehdr, e_machine), EM_ARM);
        expect_refused(mem, {bad, {}, "", {}}, "expected EM_386 (3) or EM_X86_64 (62)");
        bad = good;
        store<uint16_t>(bad, offsetof(Elf32_Ehdr, e_type), ET_DYN);
        expect_refused(mem, {bad, {}, "", {}}, "ET_EXEC");
        bad = good;
        bad[EI_DATA] = ELFDATA2MSB;
        expect_refused(mem, {bad, {}, "", {}}, "little-endian");
        bad = good;
        store<uint16_t>(bad, offsetof(Elf32_Ehdr, e_phentsize), sizeof(Elf64_Phdr));
        expect_refused(mem, {bad, {}, "", {}}, "e_phentsize is 56, expected 32");
        bad = good;
        store<uint16_t>(bad, offsetof(Elf32_Ehdr, e_phnum), 0);
        expect_refused(mem, {bad, {}, "", {}}, "no program headers");
        bad = good;
        store<uint32_t>(bad, offsetof(Elf32_Ehdr, e_phoff), 0xfffffff0);
        expect_refused(mem, {bad, {}, "", {}}, "program headers at 0xfffffff0");
    }
    SUBCASE("segment data past the end of the file") {
        auto bad = good;
        auto ph = phdr32(bad, 0);
        ph.p_offset = static_cast<Elf32_Off>(bad.size() - 0x100);
        set_phdr32(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "past its end");
        ph.p_offset = 0xffffff00;
        set_phdr32(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "past its end");
    }
    SUBCASE("p_filesz > p_memsz") {
        auto bad = good;
        auto ph = phdr32(bad, 0);
        ph.p_memsz = ph.p_filesz - 1;
        set_phdr32(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "exceeds p_memsz");
    }
    SUBCASE("segment running past 4 GiB (32-bit fields, 33-bit sum)") {
        auto bad = good;
        auto ph = phdr32(bad, 0);
        ph.p_paddr = 0xfffff000;
        ph.p_memsz = 0x4000;
        set_phdr32(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "does not end below 4 GiB");
    }
    SUBCASE("segment outside guest RAM, below 1 MiB, overlapping another") {
        auto bad = good;
        auto ph = phdr32(bad, 0);
        ph.p_memsz = 128 * kMiB;
        set_phdr32(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "does not fit in guest RAM");
        ph = phdr32(good, 0);
        ph.p_paddr = x86::kZeroPage;
        bad = good;
        set_phdr32(bad, 0, ph);
        expect_refused(mem, {bad, {}, "", {}}, "below 1 MiB");
        bad = make_elf32({{0x200000, pattern(0x100, 1), 0x2000}, {0x201000, pattern(0x10, 2), 0x10}},
                         0x200000, pvh_note(0x200000));
        expect_refused(mem, {bad, {}, "", {}}, "overlaps");
    }
    SUBCASE("no PVH note: an ELF32 image has no 64-bit entry to fall back on") {
        auto bad = make_elf32({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000);
        expect_refused(mem, {bad, {}, "", {}}, "ELF32 image has no Xen PVH note");
        // A note of another type (XEN_ELFNOTE_ENTRY, 1) is not the PVH entry either.
        bad = make_elf32({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000,
                         xen_note(1, {0, 0, 0x20, 0}));
        expect_refused(mem, {bad, {}, "", {}}, "ELF32 image has no Xen PVH note");
    }
    SUBCASE("bad PVH note: entry outside the image, wrong size, running past its segment") {
        auto bad = make_elf32({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000, pvh_note(0x300000));
        expect_refused(mem, {bad, {}, "", {}}, "outside every PT_LOAD");
        bad = make_elf32({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000,
                         xen_note(kXenElfnotePhys32Entry, {1, 2}));
        expect_refused(mem, {bad, {}, "", {}}, "expected 4 or 8");
        auto note = pvh_note(0x200000);
        store<uint32_t>(note, 4, 0x1000);
        bad = make_elf32({{0x200000, pattern(0x100, 1), 0x100}}, 0x200000, note);
        expect_refused(mem, {bad, {}, "", {}}, "runs past its PT_NOTE");
    }
}

TEST_CASE("real vmlinux: refused whole when the guest is too small, truncated or patched") {
    const auto& kernel = real_vmlinux();
    SUBCASE("16 MiB guest") {
        auto mem = make_memory(16 * kMiB);
        expect_refused(mem, {kernel, {}, "", {}}, "does not fit in guest RAM (RAM ends at 0x1000000)");
    }
    SUBCASE("truncated inside segment data, and a huge p_memsz") {
        auto mem = make_memory(256 * kMiB);
        auto last = phdr(kernel, 3);
        for (uint64_t cut : {uint64_t{0x1000}, uint64_t{0x200000 + 0x1234},
                             last.p_offset + last.p_filesz - 1}) {
            CAPTURE(cut);
            std::span<const uint8_t> t(kernel.data(), cut);
            expect_refused(mem, {t, {}, "", {}}, "past");
        }
        auto bad = kernel;
        last.p_memsz = ~0ull;
        set_phdr(bad, 3, last);
        expect_refused(mem, {bad, {}, "", {}}, "segment 3");
    }
    SUBCASE("initrd larger than guest memory") {
        auto mem = make_memory(256 * kMiB);
        auto big = Mapping::anonymous(300 * kMiB);  // untouched: costs no RAM
        REQUIRE(big);
        expect_refused(mem, {kernel, std::span<const uint8_t>(big->data(), big->size()), "", {}},
                       "initrd");
    }
}
