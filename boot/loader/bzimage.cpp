#include "boot/loader/bzimage.hpp"

#include <algorithm>
#include <cstring>

#include "boot/x86_layout.hpp"

namespace kestrel::boot {

namespace {

// boot.rst "LOADING THE REST OF THE KERNEL": used when pref_address is unusable and the
// kernel is relocatable; the traditional bzImage load address (code32_start default).
constexpr uint64_t kDefaultLoadAddr = 0x100'0000;

template <class T>
T load_le(std::span<const uint8_t> file, uint64_t off) {
    T v;
    std::memcpy(&v, file.data() + off, sizeof v);
    return v;
}

Result<uint64_t> choose_load_addr(const SetupHeader& h) {
    uint64_t pref = h.pref_address;
    if (pref >= x86::kHighMemStart) return pref;
    if (!h.relocatable_kernel)
        return fail("bzImage is not relocatable and its pref_address {:#x} is below 1 MiB, "
                    "where the VMM keeps its boot structures",
                    pref);
    uint64_t align = h.kernel_alignment;
    if (align == 0 || (align & (align - 1)) != 0)
        return fail("bzImage kernel_alignment {:#x} is not a power of two", align);
    if (align > kDefaultLoadAddr)
        return fail("bzImage kernel_alignment {:#x} is above {:#x}", align, kDefaultLoadAddr);
    return (kDefaultLoadAddr + align - 1) & ~(align - 1);
}

}  // namespace

bool looks_like_bzimage(std::span<const uint8_t> file) {
    if (file.size() < kHeaderMagicOffset + 4) return false;
    return load_le<uint16_t>(file, kBootFlagOffset) == kBootFlag &&
           load_le<uint32_t>(file, kHeaderMagicOffset) == kHeaderMagic;
}

Result<BzImage> parse_bzimage(std::span<const uint8_t> file) {
    if (file.size() < kHeaderMagicOffset + 4)
        return fail("bzImage is {} bytes, too short for a setup header (needs {:#x})",
                    file.size(), kHeaderMagicOffset + 4);
    if (uint16_t flag = load_le<uint16_t>(file, kBootFlagOffset); flag != kBootFlag)
        return fail("bzImage boot_flag at {:#x} is {:#06x}, expected {:#06x}", kBootFlagOffset,
                    flag, kBootFlag);
    if (uint32_t magic = load_le<uint32_t>(file, kHeaderMagicOffset); magic != kHeaderMagic)
        return fail("bzImage header magic at {:#x} is {:#010x}, expected {:#010x} (\"HdrS\")",
                    kHeaderMagicOffset, magic, kHeaderMagic);

    uint64_t header_end = kHeaderMagicOffset + file[kHeaderLenByteOffset];
    if (header_end > kSetupHeaderRoomEnd)
        return fail("bzImage setup header ends at {:#x}, past the room boot_params has ({:#x})",
                    header_end, kSetupHeaderRoomEnd);
    if (header_end < offsetof(BootParams, hdr.kernel_info_offset))
        return fail("bzImage setup header ends at {:#x}, too short for protocol 2.12 fields "
                    "(need {:#x})",
                    header_end, offsetof(BootParams, hdr.kernel_info_offset));
    // boot.rst: "If [setup_sects] is 0, the real value is 4"; +1 for the boot sector.
    uint64_t setup_sects = file[kSetupHeaderOffset] ? file[kSetupHeaderOffset] : 4;
    uint64_t setup_size = (setup_sects + 1) * 512;
    if (file.size() <= setup_size)
        return fail("bzImage is {} bytes, but its setup code alone takes {} bytes "
                    "(setup_sects {}): the protected-mode kernel is missing (truncated file?)",
                    file.size(), setup_size, setup_sects);
    // setup_size >= 2560 > header_end, so the whole header lies inside the file.
    BzImage img{};
    std::memcpy(&img.header, file.data() + kSetupHeaderOffset,
                std::min<uint64_t>(sizeof img.header, header_end - kSetupHeaderOffset));
    const SetupHeader& h = img.header;
    if (h.version < kMinBootProtocol)
        return fail("bzImage boot protocol is {}.{:02}, need at least {}.{:02}", h.version >> 8,
                    h.version & 0xff, kMinBootProtocol >> 8, kMinBootProtocol & 0xff);
    if (!(h.xloadflags & kXlfKernel64))
        return fail("bzImage has no 64-bit entry (xloadflags {:#x} lacks XLF_KERNEL_64)",
                    h.xloadflags);
    if (!(h.loadflags & kLoadedHigh))
        return fail("bzImage is not a big kernel (loadflags {:#x} lacks LOADED_HIGH)",
                    h.loadflags);
    img.header_bytes = file.subspan(kSetupHeaderOffset, header_end - kSetupHeaderOffset);
    img.protected_mode = file.subspan(setup_size);
    // syssize is in 16-byte units (boot.rst): a shorter payload means a truncated file.
    uint64_t expected = uint64_t{h.syssize} * 16;
    if (img.protected_mode.size() < expected)
        return fail("bzImage protected-mode kernel is {} bytes, syssize says {} (truncated file?)",
                    img.protected_mode.size(), expected);
    img.load_addr = TRY(choose_load_addr(h));
    img.load_span = std::max<uint64_t>(img.protected_mode.size(), h.init_size);
    return img;
}

}  // namespace kestrel::boot
