// prepare_boot() on bzImages: the real Debian vmlinuz through the 64-bit boot protocol, and
// corrupt or unsuitable images that must leave guest memory untouched.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "boot/loader/boot_loader.hpp"
#include "boot/loader/boot_params.hpp"
#include "boot/loader/loader_test_support.hpp"
#include "boot/x86_layout.hpp"

using namespace kestrel;
using namespace kestrel::boot;
using namespace kestrel::boot::test;

namespace {

const std::vector<uint8_t>& real_vmlinuz() {
    static const std::vector<uint8_t> v = read_kernel_artifact("vmlinuz");
    return v;
}

uint64_t setup_size(const std::vector<uint8_t>& f) {
    uint64_t sects = f[0x1f1] ? f[0x1f1] : 4;
    return (sects + 1) * 512;
}

void expect_refused(GuestMemory& mem, const BootInputs& in, const std::string& needle) {
    auto r = prepare_boot(mem, in);
    REQUIRE_FALSE(r);
    INFO("error: " << r.error().what());
    CHECK(r.error().message.find(needle) != std::string::npos);
    CHECK(all_zero(mem));
}

}  // namespace

TEST_CASE("real Debian bzImage: 64-bit entry, kernel at 16 MiB, zero page per boot protocol") {
    const auto& kernel = real_vmlinuz();
    auto mem = make_memory(256 * kMiB);
    std::vector<uint8_t> initrd(5 * kMiB + 17, 0x5a);
    initrd.front() = 0x11;
    const std::string cmdline = "console=ttyS0 root=/dev/vda rw";
    auto r = prepare_boot(mem, {kernel, initrd, cmdline, GuestAddress(0xe0000)});
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    CHECK(r->mode == EntryMode::Linux64);
    CHECK(r->entry.raw == 0x1000000 + 0x200);
    CHECK(r->boot_info.raw == x86::kZeroPage);
    const uint32_t init_size = load<uint32_t>(kernel, 0x260);
    CHECK(r->kernel_end.raw == 0x1000000 + init_size);

    // The protected-mode kernel landed at the load address, first and last bytes alike.
    const uint64_t pm = setup_size(kernel);
    const uint64_t pm_len = kernel.size() - pm;
    auto loaded = mem.slice(GuestAddress(0x1000000), pm_len);
    REQUIRE(loaded);
    CHECK(std::memcmp(loaded->data(), kernel.data() + pm, pm_len) == 0);

    auto bp = guest<BootParams>(mem, x86::kZeroPage);
    CHECK(val(bp.hdr.boot_flag) == 0xaa55);
    CHECK(val(bp.hdr.header) == 0x53726448);
    CHECK(val(bp.hdr.version) == load<uint16_t>(kernel, 0x206));  // copied from the image
    CHECK(val(bp.hdr.version) >= 0x020c);
    CHECK(val(bp.hdr.init_size) == init_size);
    CHECK(val(bp.hdr.pref_address) == 0x1000000);
    CHECK(val(bp.hdr.type_of_loader) == 0xff);
    CHECK((val(bp.hdr.loadflags) & (kCanUseHeap | kLoadedHigh)) == (kCanUseHeap | kLoadedHigh));
    CHECK(val(bp.hdr.heap_end_ptr) == 0xfe00);
    CHECK(val(bp.hdr.cmd_line_ptr) == x86::kCmdline);
    CHECK(val(bp.ext_cmd_line_ptr) == 0);
    auto text = mem.slice(GuestAddress(bp.hdr.cmd_line_ptr), cmdline.size() + 1);
    REQUIRE(text);
    CHECK(std::string(reinterpret_cast<const char*>(text->data())) == cmdline);
    CHECK(val(bp.sentinel) == 0);

    REQUIRE(r->initrd);
    CHECK(val(bp.hdr.ramdisk_image) == r->initrd->first.raw);
    CHECK(val(bp.hdr.ramdisk_size) == initrd.size());
    CHECK(val(bp.ext_ramdisk_image) == 0);
    CHECK(val(bp.ext_ramdisk_size) == 0);
    CHECK(val(bp.hdr.ramdisk_image) % 4096 == 0);
    CHECK(val(bp.hdr.ramdisk_image) >= r->kernel_end.raw);
    CHECK(uint64_t{val(bp.hdr.ramdisk_image)} + initrd.size() - 1 <= val(bp.hdr.initrd_addr_max));
    CHECK(uint64_t{val(bp.hdr.ramdisk_image)} + initrd.size() > 256 * kMiB - 4096);
    CHECK(guest<uint8_t>(mem, val(bp.hdr.ramdisk_image)) == 0x11);

    CHECK(val(bp.acpi_rsdp_addr) == 0xe0000);
    REQUIRE(val(bp.e820_entries) == 4);
    uint64_t ram = 0;
    for (int i = 0; i < bp.e820_entries; ++i) {
        BootE820Entry e = bp.e820_table[i];
        CHECK(val(e.size) > 0);
        CHECK((val(e.type) == 1 || val(e.type) == 2));
        if (i > 0) CHECK(val(bp.e820_table[i - 1].addr) + val(bp.e820_table[i - 1].size) <= val(e.addr));
        if (e.type == 1) ram += e.size;
    }
    CHECK(val(bp.e820_table[0].addr) == 0);
    CHECK(val(bp.e820_table[1].type) == 2);
    CHECK(val(bp.e820_table[2].addr) + val(bp.e820_table[2].size) == 256 * kMiB);
    CHECK(ram == 256 * kMiB - (0x100000 - x86::kEbdaStart));
}

TEST_CASE("corrupt or unsuitable bzImages are refused and guest memory stays all zero") {
    const auto& kernel = real_vmlinuz();
    auto mem = make_memory(128 * kMiB);  // holds the kernel's init_size, keeps the scans short
    const uint64_t pm = setup_size(kernel);
    const uint64_t sys_bytes = uint64_t{load<uint32_t>(kernel, 0x1f4)} * 16;

    SUBCASE("truncated at several points") {
        for (uint64_t cut : {uint64_t{0x100}, uint64_t{0x205}, uint64_t{0x1f00}, pm,
                             pm + 0x1000, pm + sys_bytes - 1}) {
            CAPTURE(cut);
            std::span<const uint8_t> t(kernel.data(), cut);
            auto r = prepare_boot(mem, {t, {}, "", {}});
            REQUIRE_FALSE(r);
            INFO("error: " << r.error().what());
            CHECK(all_zero(mem));
        }
    }
    SUBCASE("wrong magic") {
        auto bad = kernel;
        bad[0x202] = 'X';
        expect_refused(mem, {bad, {}, "", {}}, "neither ELF");
        bad = kernel;
        bad[0x1fe] = 0;
        expect_refused(mem, {bad, {}, "", {}}, "neither ELF");
    }
    SUBCASE("boot protocol too old") {
        auto bad = kernel;
        store<uint16_t>(bad, 0x206, 0x020b);
        expect_refused(mem, {bad, {}, "", {}}, "boot protocol is 2.11, need at least 2.12");
    }
    SUBCASE("no 64-bit entry") {
        auto bad = kernel;
        store<uint16_t>(bad, 0x236, static_cast<uint16_t>(load<uint16_t>(bad, 0x236) & ~1u));
        expect_refused(mem, {bad, {}, "", {}}, "XLF_KERNEL_64");
    }
    SUBCASE("setup header length byte pointing past boot_params' room") {
        auto bad = kernel;
        bad[0x201] = 0xff;
        expect_refused(mem, {bad, {}, "", {}}, "setup header ends at 0x301");
    }
    SUBCASE("guest too small: 16 MiB, and 64 MiB which holds the file but not init_size") {
        auto small = make_memory(16 * kMiB);
        expect_refused(small, {kernel, {}, "", {}}, "guest RAM ends at 0x1000000");
        auto mid = make_memory(64 * kMiB);
        expect_refused(mid, {kernel, {}, "", {}}, "init_size");
    }
    SUBCASE("initrd that does not fit above the kernel") {
        auto mid = make_memory(128 * kMiB);
        auto big = Mapping::anonymous(64 * kMiB);
        REQUIRE(big);
        expect_refused(mid, {kernel, std::span<const uint8_t>(big->data(), big->size()), "", {}},
                       "initrd of 0x4000000 bytes does not fit");
    }
    SUBCASE("command line longer than the kernel's cmdline_size") {
        const uint32_t limit = load<uint32_t>(kernel, 0x238);
        CHECK(prepare_boot(mem, {kernel, {}, std::string(limit, 'x'), {}}));  // exactly fits
        auto fresh = make_memory(128 * kMiB);
        expect_refused(fresh, {kernel, {}, std::string(limit + 1, 'x'), {}},
                       fmt::format("command line is {} bytes", limit + 1));
        auto r = prepare_boot(fresh, {kernel, {}, std::string(limit + 1, 'x'), {}});
        REQUIRE_FALSE(r);
        CHECK(r.error().message.find(fmt::format("cmdline_size {}", limit)) != std::string::npos);
    }
}
