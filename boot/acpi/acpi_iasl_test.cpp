// Round-trips the tables through ACPICA's iasl (acpica-tools): what iasl can disassemble
// without complaint is what Linux's ACPICA will parse. Needs iasl on PATH, on purpose: a
// missing tool fails the test instead of silently skipping the only independent check.
#include "boot/acpi/acpi_tables.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <fmt/format.h>

#include "boot/x86_layout.hpp"

using namespace kestrel;
using namespace kestrel::acpi;
namespace fs = std::filesystem;

namespace {

// A fresh directory under $TMPDIR, removed at scope exit.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "kestrel-acpi-XXXXXX").string();
        if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

// Exit status of `sh -c command`, or -1 if it did not exit normally.
int run(const std::string& command) {
    int status = std::system(command.c_str());
    if (status == -1 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

bool iasl_available() { return run("command -v iasl >/dev/null 2>&1") == 0; }

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    REQUIRE(out.good());
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// Disassembles dir/<name>.dat with `iasl -d`; returns the .dsl text.
std::string disassemble(const fs::path& dir, const std::string& name) {
    const std::string cmd = "cd " + quoted(dir) + " && iasl -d " + name + ".dat >" + name +
                            ".log 2>&1";
    const int rc = run(cmd);
    INFO("iasl output:\n" << read_text(dir / (name + ".log")));
    CHECK(rc == 0);
    REQUIRE(fs::exists(dir / (name + ".dsl")));
    return read_text(dir / (name + ".dsl"));
}

void check_clean(const std::string& dsl) {
    INFO("disassembly:\n" << dsl);
    CHECK(dsl.find("Error") == std::string::npos);
    CHECK(dsl.find("**** Unknown") == std::string::npos);
    CHECK(dsl.find("Invalid") == std::string::npos);
    CHECK(dsl.find("Warning") == std::string::npos);
}

// Compiles dir/<source> with iasl into dir/<out>.aml and returns its bytes. -on keeps iasl from
// shortening name paths, so AML compiles back to exactly what was disassembled.
std::vector<uint8_t> compile(const fs::path& dir, const std::string& source, const std::string& out) {
    const int rc = run("cd " + quoted(dir) + " && iasl -on -p " + out + " " + source + " >" + out +
                       ".log 2>&1");
    const std::string log = read_text(dir / (out + ".log"));
    INFO("iasl output:\n" << log);
    CHECK(rc == 0);
    CHECK(log.find("Compilation successful. 0 Errors, 0 Warnings") != std::string::npos);
    return read_bytes(dir / (out + ".aml"));
}

// Equal except for the checksum (9) and creator id/revision (28..35), which iasl makes its own.
void check_same_table(const std::vector<uint8_t>& ours, const std::vector<uint8_t>& iasl) {
    REQUIRE(ours.size() == iasl.size());
    for (size_t i = 0; i < ours.size(); ++i) {
        if (i == 9 || (i >= 28 && i < 36)) continue;
        CAPTURE(i);
        CHECK(uint32_t{ours[i]} == uint32_t{iasl[i]});
    }
}

bool has(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

AcpiConfig with_pci(uint32_t n) {
    return AcpiConfig{n, PciHostConfig{.ecam_base = x86::kPciEcamStart,
                                       .bus_start = 0,
                                       .bus_end = 0,
                                       .mmio32_base = x86::kPciMmio32Start,
                                       .mmio32_size = x86::kPciMmio32Size}};
}

// The PCI0 windows and the ECAM reservation exactly as iasl 2020's disassembler prints them
// for the x86_layout.hpp windows.
const char kPci0Windows[] =
    "                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,\n"
    "                    0x0000,             // Granularity\n"
    "                    0x0000,             // Range Minimum\n"
    "                    0x0000,             // Range Maximum\n"
    "                    0x0000,             // Translation Offset\n"
    "                    0x0001,             // Length\n"
    "                    ,, )\n"
    "                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,\n"
    "                    0x0000,             // Granularity\n"
    "                    0x0000,             // Range Minimum\n"
    "                    0x0CF7,             // Range Maximum\n"
    "                    0x0000,             // Translation Offset\n"
    "                    0x0CF8,             // Length\n"
    "                    ,, , TypeStatic, DenseTranslation)\n"
    "                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,\n"
    "                    0x0000,             // Granularity\n"
    "                    0x0D00,             // Range Minimum\n"
    "                    0xFFFF,             // Range Maximum\n"
    "                    0x0000,             // Translation Offset\n"
    "                    0xF300,             // Length\n"
    "                    ,, , TypeStatic, DenseTranslation)\n"
    "                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, "
    "ReadWrite,\n"
    "                    0x00000000,         // Granularity\n"
    "                    0xC0000000,         // Range Minimum\n"
    "                    0xDFFFFFFF,         // Range Maximum\n"
    "                    0x00000000,         // Translation Offset\n"
    "                    0x20000000,         // Length\n"
    "                    ,, , AddressRangeMemory, TypeStatic)\n"
    "            })";
const char kEcamReservation[] =
    "                Memory32Fixed (ReadWrite,\n"
    "                    0xE0000000,         // Address Base\n"
    "                    0x00100000,         // Address Length\n"
    "                    )";
const char kRtcResources[] =
    "                IO (Decode16,\n"
    "                    0x0070,             // Range Minimum\n"
    "                    0x0070,             // Range Maximum\n"
    "                    0x01,               // Alignment\n"
    "                    0x02,               // Length\n"
    "                    )\n"
    "            })";

const char kKbdResources[] =
    "                IO (Decode16,\n"
    "                    0x0060,             // Range Minimum\n"
    "                    0x0060,             // Range Maximum\n"
    "                    0x01,               // Alignment\n"
    "                    0x01,               // Length\n"
    "                    )\n"
    "                IO (Decode16,\n"
    "                    0x0064,             // Range Minimum\n"
    "                    0x0064,             // Range Maximum\n"
    "                    0x01,               // Alignment\n"
    "                    0x01,               // Length\n"
    "                    )\n"
    "                IRQNoFlags ()\n"
    "                    {1}\n"
    "            })";

const char kInstallHint[] = "iasl/acpiexec not found: install acpica-tools "
                            "(apt-get install -y acpica-tools)";

}  // namespace

TEST_CASE("acpi/iasl: every table disassembles cleanly and recompiles to the same bytes") {
    REQUIRE_MESSAGE(iasl_available(), kInstallHint);
    for (uint32_t n : {1u, 8u, 254u})
    for (bool pci : {false, true}) {
        CAPTURE(n);
        CAPTURE(pci);
        TempDir dir;
        REQUIRE(!dir.path().empty());
        auto blobs = build_acpi_tables(pci ? with_pci(n) : AcpiConfig{n}, x86::kAcpiStart);
        REQUIRE(blobs.size() == (pci ? 6 : 5));
        for (const auto& [name, bytes] : blobs) {
            CAPTURE(name);
            if (name == "RSDP") continue;  // iasl 2020 cannot load an RSDP binary; see below
            write_bytes(dir.path() / (name + ".dat"), bytes);
            const std::string dsl = disassemble(dir.path(), name);
            check_clean(dsl);
            if (name == "DSDT") {
                CHECK(dsl.find("_S5_") != std::string::npos);
                CHECK(dsl.find("PNP0501") != std::string::npos);
                CHECK(dsl.find("IO (Decode16,") != std::string::npos);
                CHECK(dsl.find("IRQNoFlags ()") != std::string::npos);
                CHECK(has(dsl, "Device (RTC)"));
                CHECK(has(dsl, "EisaId (\"PNP0B00\") /* AT Real-Time Clock */"));
                CHECK(has(dsl, kRtcResources));
                CHECK(has(dsl, "Device (KBD)"));
                CHECK(has(dsl, "EisaId (\"PNP0303\") /* IBM Enhanced Keyboard (101/102-key, PS/2 Mouse) */"));
                CHECK(has(dsl, kKbdResources));
                CHECK(has(dsl, "EisaId (\"PNP0A08\")") == pci);
                CHECK(has(dsl, "EisaId (\"PNP0A03\")") == pci);
                CHECK(has(dsl, "EisaId (\"PNP0C02\")") == pci);
                CHECK(has(dsl, kPci0Windows) == pci);
                CHECK(has(dsl, kEcamReservation) == pci);
                if (pci) {
                    CHECK(has(dsl, "Device (PCI0)"));
                    CHECK(has(dsl, "Name (_SEG, Zero)"));
                    CHECK(has(dsl, "Name (_BBN, Zero)"));
                    CHECK(has(dsl, "Name (_UID, Zero)"));
                    CHECK(has(dsl, "Device (ECAM)"));
                }
            }
            if (name == "MCFG") {
                CHECK(has(dsl, "Base Address : 00000000E0000000"));
                CHECK(has(dsl, "Segment Group Number : 0000"));
                CHECK(has(dsl, "Start Bus Number : 00"));
                CHECK(has(dsl, "End Bus Number : 00"));
                CHECK(has(dsl, "Table Length : 0000003C"));
            }
            if (name == "FACP") {
                CHECK(dsl.find("Hardware Reduced (V5) : 1") != std::string::npos);
                CHECK(dsl.find("Reset Register Supported (V2) : 1") != std::string::npos);
                CHECK(has(dsl, "CMOS RTC Not Present (V5) : 0"));
                CHECK(has(dsl, "8042 Present on ports 60/64 (V2) : 1"));
                CHECK(has(dsl, "RTC Century Index : 32"));
            }
            if (name == "APIC") {
                size_t lapics = 0;
                for (size_t p = 0; (p = dsl.find("[Processor Local APIC]", p)) != std::string::npos;
                     ++p)
                    ++lapics;
                CHECK(lapics == n);
                CHECK(dsl.find("[I/O APIC]") != std::string::npos);
                CHECK(dsl.find("[Interrupt Source Override]") != std::string::npos);
            }
            check_same_table(bytes, compile(dir.path(), name + ".dsl", name + "-again"));
        }
    }
}

TEST_CASE("acpi/iasl: iasl builds the same RSDP, checksums included") {
    REQUIRE_MESSAGE(iasl_available(), kInstallHint);
    TempDir dir;
    REQUIRE(!dir.path().empty());
    auto blobs = build_acpi_tables(AcpiConfig{2}, x86::kAcpiStart);
    REQUIRE(blobs.size() == 5);
    REQUIRE(blobs[0].first == "RSDP");
    const auto addrs = acpi_table_addresses(x86::kAcpiStart, blobs);
    // iasl's data-table compiler computes both RSDP checksums itself from zeroes.
    std::ofstream(dir.path() / "rsdp.asl")
        << "[0008] Signature : \"RSD PTR \"\n"
           "[0001] Checksum : 00\n"
           "[0006] Oem ID : \"KESTRL\"\n"
           "[0001] Revision : 02\n"
           "[0004] RSDT Address : 00000000\n"
           "[0004] Length : 00000024\n"
        << "[0008] XSDT Address : " << std::hex << addrs[1] << "\n"
        << "[0001] Extended Checksum : 00\n"
           "[0003] Reserved : 000000\n";
    const std::vector<uint8_t> iasl_rsdp = compile(dir.path(), "rsdp.asl", "rsdp");
    CHECK(iasl_rsdp == blobs[0].second);
}

TEST_CASE("acpi/iasl: ACPICA's interpreter (acpiexec) loads the DSDT and evaluates it") {
    REQUIRE_MESSAGE(run("command -v acpiexec >/dev/null 2>&1") == 0, kInstallHint);
    TempDir dir;
    REQUIRE(!dir.path().empty());
    for (const auto& [name, bytes] : build_acpi_tables(with_pci(4), x86::kAcpiStart))
        if (name != "RSDP" && name != "XSDT") write_bytes(dir.path() / (name + ".dat"), bytes);
    // `resources` runs _CRS through ACPICA's resource manager, the code behind Linux's
    // acpi_walk_resources, and converts the result back to AML for comparison.
    const int rc = run("cd " + quoted(dir.path()) +
                       " && timeout 60 acpiexec -b 'evaluate \\_S5_;evaluate \\_SB.COM1._HID;"
                       "evaluate \\_SB.COM1._UID;evaluate \\_SB.COM1._CRS;"
                       "evaluate \\_SB.RTC._HID;evaluate \\_SB.RTC._CRS;"
                       "evaluate \\_SB.KBD._HID;evaluate \\_SB.KBD._CRS;resources \\_SB.KBD;"
                       "evaluate \\_SB.PCI0._HID;evaluate \\_SB.PCI0._CID;"
                       "evaluate \\_SB.PCI0._SEG;evaluate \\_SB.PCI0._BBN;"
                       "evaluate \\_SB.PCI0._CRS;evaluate \\_SB.ECAM._HID;"
                       "evaluate \\_SB.ECAM._CRS;resources \\_SB.PCI0;resources \\_SB.ECAM;"
                       "resources \\_SB.RTC' "
                       "FACP.dat APIC.dat DSDT.dat MCFG.dat >acpiexec.log 2>&1");
    const std::string out = read_text(dir.path() / "acpiexec.log");
    INFO("acpiexec output:\n" << out);
    CHECK(rc == 0);
    CHECK(out.find("ACPI Error") == std::string::npos);
    CHECK(out.find("ACPI Exception") == std::string::npos);
    CHECK_FALSE(has(out, "Could not"));
    CHECK_FALSE(has(out, "Mismatch"));
    CHECK(has(out, "ACPI: MCFG "));
    const std::string slp_typ = fmt::format("{:016X}", x86::kAcpiS5SleepType);
    CHECK(out.find("[Package] Contains 4 Elements:\n"
                   "    [Integer] = " + slp_typ + "\n"
                   "    [Integer] = " + slp_typ + "\n"
                   "    [Integer] = 0000000000000000\n"
                   "    [Integer] = 0000000000000000") != std::string::npos);
    CHECK(out.find("[Integer] = 000000000105D041") != std::string::npos);  // PNP0501
    CHECK(out.find("47 01 F8 03 F8 03 00 08 22 10 00 79 00") != std::string::npos);

    CHECK(has(out, "[Integer] = 00000000000BD041"));  // PNP0B00
    CHECK(has(out, "[Integer] = 000000000303D041"));  // PNP0303
    CHECK(has(out, "0000: 47 01 60 00 60 00 01 01 47 01 64 00 64 00 01 01"));
    CHECK(has(out, "0010: 22 02 00 79 00"));
    // The resource manager's view of the keyboard's IRQ: ISA IRQ 1, edge, active high.
    CHECK(has(out, "Triggering : Edge\n                   Polarity : ActiveHigh\n"
                   "                    Sharing : Exclusive\n            Interrupt Count : 01\n"
                   "             Interrupt List : 1 "));
    CHECK(has(out, "47 01 70 00 70 00 01 02 79 00"));  // I/O only: no IRQ
    CHECK(has(out, "[Integer] = 00000000080AD041"));  // PNP0A08
    CHECK(has(out, "[Integer] = 00000000030AD041"));  // PNP0A03
    CHECK(has(out, "[Integer] = 00000000020CD041"));  // PNP0C02
    CHECK(has(out, "Evaluation of \\_SB.PCI0._CRS returned object"));
    CHECK(has(out, "  [Buffer] Length 4C = \n"
                   "    0000: 88 0D 00 02 0C 00 00 00 00 00 00 00 00 00 01 00"));
    CHECK(has(out, "86 09 00 01 00 00 00 E0 00 00 10 00 79 00"));
    // The resource manager's view of the windows.
    CHECK(has(out, "Resource Type : Bus Number Range"));
    CHECK(has(out, "Address Minimum : 0D00\n            Address Maximum : FFFF"));
    CHECK(has(out, "Address Minimum : C0000000\n            Address Maximum : DFFFFFFF"));
    CHECK(has(out, "Caching : NonCacheable"));
    CHECK(has(out, "Address : E0000000\n             Address Length : 00100000"));
    CHECK_FALSE(has(out, "Interrupt List : 8"));  // the RTC raises no interrupt
}
