#include "boot/loader/boot_loader.hpp"

#include <algorithm>
#include <vector>

#include "boot/loader/bzimage.hpp"
#include "boot/loader/e820.hpp"
#include "boot/loader/elf_kernel.hpp"
#include "boot/loader/initrd_placement.hpp"
#include "boot/loader/load_plan.hpp"
#include "boot/loader/pvh_start_info.hpp"
#include "boot/loader/zero_page.hpp"
#include "boot/x86_layout.hpp"

namespace kestrel::boot {

namespace {

// What every boot path shares: RAM layout, command line and initrd placement.
struct CommonLayout {
    std::vector<GuestRegionSpec> ram;
    std::vector<E820Entry> memory_map;
    std::optional<std::pair<GuestAddress, uint64_t>> initrd;
};

Result<void> check_cmdline(const std::string& cmdline, uint64_t max_len, std::string_view why) {
    if (auto nul = cmdline.find('\0'); nul != std::string::npos)
        return fail("command line contains a NUL byte at position {}", nul);
    if (cmdline.size() > max_len)
        return fail("command line is {} bytes, longer than the limit of {} ({})", cmdline.size(),
                    max_len, why);
    return {};
}

Result<CommonLayout> plan_common(const GuestMemory& mem, const BootInputs& in,
                                 uint64_t kernel_end, uint64_t initrd_limit, LoadPlan& plan) {
    CommonLayout c;
    c.ram = ram_regions(mem);
    c.memory_map = build_e820_map(c.ram);
    if (!in.initrd.empty()) {
        auto at = place_initrd(c.ram, in.initrd.size(), kernel_end, initrd_limit);
        if (!at)
            return fail("initrd of {:#x} bytes does not fit in guest RAM between the kernel end "
                        "{:#x} and {:#x} (guest RAM ends at {:#x})",
                        in.initrd.size(), kernel_end, initrd_limit, mem.end().raw);
        c.initrd = std::pair{*at, uint64_t{in.initrd.size()}};
        plan.copy(*at, in.initrd, "initrd");
    }
    std::vector<uint8_t> cmdline(in.cmdline.begin(), in.cmdline.end());
    cmdline.push_back(0);
    plan.copy_owned(GuestAddress(x86::kCmdline), std::move(cmdline), "command line");
    return c;
}

BootInfoInputs info_inputs(const BootInputs& in, const CommonLayout& c) {
    return {GuestAddress(x86::kCmdline), in.cmdline.size(), c.initrd, c.memory_map, in.rsdp};
}

std::vector<uint8_t> bytes_of(const BootParams& bp) {
    auto* p = reinterpret_cast<const uint8_t*>(&bp);
    return {p, p + sizeof bp};
}

Result<BootEntry> prepare_elf(GuestMemory& mem, const BootInputs& in) {
    auto k = TRY(parse_elf_kernel(in.kernel));
    TRY(check_cmdline(in.cmdline, x86::kCmdlineMax - 1,
                      fmt::format("VMM command line buffer {}", x86::kCmdlineMax - 1)));
    LoadPlan plan;
    for (size_t i = 0; i < k.segments.size(); ++i) {
        const auto& s = k.segments[i];
        auto label = fmt::format("kernel PT_LOAD segment {}", i);
        plan.copy(GuestAddress(s.paddr), s.file_bytes, label);
        if (s.memsz > s.file_bytes.size())
            plan.zero(GuestAddress(s.paddr + s.file_bytes.size()), s.memsz - s.file_bytes.size(),
                      label + " (zeroed tail)");
    }
    auto c = TRY(plan_common(mem, in, k.end, x86::kMmioHoleEnd, plan));
    BootEntry out{};
    out.kernel_end = GuestAddress(k.end);
    out.initrd = c.initrd;
    if (k.pvh_entry) {
        auto info = TRY(build_pvh_start_info(info_inputs(in, c)));
        plan.copy_owned(GuestAddress(x86::kPvhStartInfo), std::move(info), "PVH start info");
        out.mode = EntryMode::Pvh32;
        out.entry = GuestAddress(*k.pvh_entry);
        out.boot_info = GuestAddress(x86::kPvhStartInfo);
    } else {
        auto bp = TRY(build_zero_page({}, info_inputs(in, c)));
        plan.copy_owned(GuestAddress(x86::kZeroPage), bytes_of(bp), "zero page");
        out.mode = EntryMode::Linux64;
        out.entry = GuestAddress(k.entry);
        out.boot_info = GuestAddress(x86::kZeroPage);
    }
    TRY(plan.apply(mem));
    return out;
}

Result<BootEntry> prepare_bzimage(GuestMemory& mem, const BootInputs& in) {
    auto img = TRY(parse_bzimage(in.kernel));
    const SetupHeader& h = img.header;
    // cmdline_size: "maximum size of the command line without the terminating zero".
    TRY(check_cmdline(in.cmdline, std::min<uint64_t>(h.cmdline_size, x86::kCmdlineMax - 1),
                      fmt::format("kernel cmdline_size {}, VMM command line buffer {}",
                                  h.cmdline_size, x86::kCmdlineMax - 1)));
    // The decompressor uses init_size bytes from the load address, so all of it must be RAM
    // and inside the 4 GiB the 64-bit entry's identity map covers.
    uint64_t kernel_end;
    if (__builtin_add_overflow(img.load_addr, img.load_span, &kernel_end) ||
        kernel_end > x86::kMmioHoleEnd || !mem.slice(GuestAddress(img.load_addr), img.load_span))
        return fail("bzImage kernel needs guest RAM [{:#x}, {:#x}) (image {:#x} bytes, init_size "
                    "{:#x}) but guest RAM ends at {:#x}",
                    img.load_addr, img.load_addr + img.load_span, img.protected_mode.size(),
                    h.init_size, mem.end().raw);
    LoadPlan plan;
    plan.copy(GuestAddress(img.load_addr), img.protected_mode, "bzImage protected-mode kernel");
    // boot.rst initrd_addr_max: "the highest address that may be occupied by the initrd".
    uint64_t initrd_limit = std::min<uint64_t>(uint64_t{h.initrd_addr_max} + 1, x86::kMmioHoleEnd);
    auto c = TRY(plan_common(mem, in, kernel_end, initrd_limit, plan));
    auto bp = TRY(build_zero_page(img.header_bytes, info_inputs(in, c)));
    plan.copy_owned(GuestAddress(x86::kZeroPage), bytes_of(bp), "zero page");
    TRY(plan.apply(mem));
    return BootEntry{EntryMode::Linux64, GuestAddress(img.load_addr + kBzImage64EntryOffset),
                     GuestAddress(x86::kZeroPage), GuestAddress(kernel_end), c.initrd};
}

}  // namespace

Result<BootEntry> prepare_boot(GuestMemory& mem, const BootInputs& in) {
    if (looks_like_elf(in.kernel)) return prepare_elf(mem, in);
    if (looks_like_bzimage(in.kernel)) return prepare_bzimage(mem, in);
    if (in.kernel.size() < kHeaderMagicOffset + 4)
        return fail("kernel image is {} bytes: not ELF (no 7f 45 4c 46 magic) and too short for "
                    "a bzImage setup header (needs {:#x} bytes)",
                    in.kernel.size(), kHeaderMagicOffset + 4);
    return fail("kernel image is neither ELF (magic 7f 45 4c 46) nor bzImage (boot_flag 0xaa55 "
                "at {:#x}, \"HdrS\" at {:#x})",
                kBootFlagOffset, kHeaderMagicOffset);
}

}  // namespace kestrel::boot
