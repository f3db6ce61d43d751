// `kestrel import SRC DST`: turns a VMware (VMDK), Hyper-V (VHD, VHDX), QEMU (qcow2) or
// VirtualBox (VDI) disk into the raw image kestrel serves (virtio-blk over io_uring reads raw
// files only), through `qemu-img` from Debian's qemu-utils.
//
// Steps, each with its own message naming the file at fault:
//  1. the source must exist and be readable; `qemu-img info --backing-chain --output=json`
//     (under CPU-time and address-space limits, as OpenStack runs it on images it did not
//     make: a crafted header must not eat the host) detects its format and opens every file
//     it reads: backing files and VMDK extents. An image qemu-img cannot open (truncated,
//     corrupt header, a backing file or extent that is missing) is refused with qemu-img's
//     own reason; so are a qcow2 marked corrupt, an encrypted image, a virtual size of 0,
//     a file named like a VMDK/VHD/VHDX/qcow2/VDI whose content qemu-img takes for raw data
//     (a damaged or misnamed image), and backing files or extents that are not regular
//     files (a crafted VMDK descriptor naming /dev/sda would copy the host's disk).
//  2. DST must not exist unless --force, and is never anything but a regular file.
//  3. `qemu-img convert -f FMT -O raw` (with the format found in 1, so nothing is probed
//     twice) writes a temporary file beside DST, which is padded to a multiple of 512 bytes
//     (kestrel refuses raw images of another size), fsynced and renamed onto DST: DST is
//     either the whole image or untouched, also when qemu-img fails or kestrel is stopped
//     by SIGINT/SIGTERM/SIGHUP (the temporary file is removed; exit 128+N). The output is
//     sparse where the source had no data.
// On a terminal, qemu-img's progress (-p) is drawn as kestrel's own progress bar on stderr.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmm/base/error.hpp"

namespace kestrel {

struct ImportOptions {
    std::string source;
    std::string destination;
    bool force = false;     // replace an existing DST
    bool progress = false;  // draw a progress bar on stderr (main: when stderr is a terminal)
};

// Exit codes of `kestrel import`.
inline constexpr int kImportOk = 0;
inline constexpr int kImportFailed = 1;

// What step 1 learnt about the source.
struct SourceImage {
    std::string format;                // qemu-img's name: vmdk, vpc (VHD), vhdx, qcow2, vdi, raw...
    uint64_t virtual_size = 0;         // bytes the guest will see (before padding to 512)
    std::vector<std::string> reads;    // backing files and extents besides the source itself
};

// Judges `qemu-img info --backing-chain --output=json SOURCE`'s answer (an array: the
// source first, then its backing files). Pure, for tests; the files it names are stat()ed.
Result<SourceImage> check_source_info(const nlohmann::json& chain, const std::string& source);

// qemu-img convert -p prints "    (12.34/100%)\r" as it goes; feed() takes its output in
// whatever pieces a pipe delivers and returns the latest complete percentage, if any.
class ProgressParser {
public:
    std::optional<double> feed(std::string_view chunk);

private:
    std::string pending_;
};

// Runs the import; failures are logged (kestrel: error: ...). Returns the exit code:
// kImportOk, kImportFailed, or 128+N after signal N.
int run_import(const ImportOptions& o);

}  // namespace kestrel
