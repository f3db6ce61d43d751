#include "boot/loader/pvh_start_info.hpp"

#include <cstring>

#include "boot/loader/hvm_start_info.hpp"
#include "boot/x86_layout.hpp"

namespace kestrel::boot {

namespace {

template <class T>
void put(std::vector<uint8_t>& buf, uint64_t off, const T& v) {
    std::memcpy(buf.data() + off, &v, sizeof v);
}

}  // namespace

Result<std::vector<uint8_t>> build_pvh_start_info(const BootInfoInputs& in) {
    constexpr uint64_t kRoom = x86::kZeroPage - x86::kPvhStartInfo;
    const uint64_t modules = in.initrd ? 1 : 0;
    const uint64_t modlist_off = sizeof(HvmStartInfo);  // 8-byte aligned (static_assert below)
    const uint64_t memmap_off = modlist_off + modules * sizeof(HvmModlistEntry);
    const uint64_t total = memmap_off + in.memory_map.size() * sizeof(HvmMemmapEntry);
    static_assert(sizeof(HvmStartInfo) % 8 == 0 && sizeof(HvmModlistEntry) % 8 == 0);
    if (total > kRoom)
        return fail("PVH start info with {} memory map entries needs {} bytes, only {} fit "
                    "between {:#x} and the zero page at {:#x}",
                    in.memory_map.size(), total, kRoom, x86::kPvhStartInfo, x86::kZeroPage);

    std::vector<uint8_t> buf(total, 0);
    HvmStartInfo si{};
    si.magic = kHvmStartMagic;
    si.version = kHvmStartInfoVersion;
    si.nr_modules = static_cast<uint32_t>(modules);
    si.modlist_paddr = modules ? x86::kPvhStartInfo + modlist_off : 0;
    si.cmdline_paddr = in.cmdline.raw;
    si.rsdp_paddr = in.rsdp.raw;
    si.memmap_paddr = x86::kPvhStartInfo + memmap_off;
    si.memmap_entries = static_cast<uint32_t>(in.memory_map.size());
    put(buf, 0, si);
    if (in.initrd) put(buf, modlist_off, HvmModlistEntry{in.initrd->first.raw, in.initrd->second, 0, 0});
    for (size_t i = 0; i < in.memory_map.size(); ++i) {
        const auto& e = in.memory_map[i];
        put(buf, memmap_off + i * sizeof(HvmMemmapEntry),
            HvmMemmapEntry{e.addr, e.size, static_cast<uint32_t>(e.type), 0});
    }
    return buf;
}

}  // namespace kestrel::boot
