#include "vmm/kvm/kvm.hpp"

#include "vmm/kvm/uapi_flex.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>

namespace kestrel::kvm {

namespace {

struct RequiredCap {
    long cap;
    const char* name;
};
// What the VMM cannot do without (api.rst §8 capabilities).
constexpr RequiredCap kRequiredCaps[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
};

template <class T>
Result<T> get(int fd, unsigned long req, const char* what) {
    T v{};
    if (::ioctl(fd, req, &v) < 0) return fail_errno("{}", what);
    return v;
}
template <class T>
Result<void> set(int fd, unsigned long req, const T& v, const char* what) {
    if (::ioctl(fd, req, &v) < 0) return fail_errno("{}", what);
    return {};
}

// Copies entries behind a FlexHeader and issues the ioctl; for an ioctl that fills them in
// (non-const entries: KVM_GET_MSRS), copies them back.
template <class Entry>
int flex_ioctl(int fd, unsigned long req, std::span<Entry> entries) {
    size_t bytes = sizeof(uapi::FlexHeader) + entries.size_bytes();
    auto buf = std::make_unique<uint8_t[]>(bytes);
    std::memset(buf.get(), 0, bytes);
    reinterpret_cast<uapi::FlexHeader*>(buf.get())->count = static_cast<uint32_t>(entries.size());
    std::memcpy(buf.get() + sizeof(uapi::FlexHeader), entries.data(), entries.size_bytes());
    int rc = ::ioctl(fd, req, buf.get());
    if constexpr (!std::is_const_v<Entry>)
        if (rc >= 0) std::memcpy(entries.data(), buf.get() + sizeof(uapi::FlexHeader), entries.size_bytes());
    return rc;
}
template <class Entry>
int flex_ioctl(int fd, unsigned long req, const std::vector<Entry>& entries) {
    return flex_ioctl(fd, req, std::span<const Entry>(entries));
}
}  // namespace

Result<System> System::open(const std::string& path) {
    int raw = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (raw < 0) {
        int e = errno;
        if (e == ENOENT)
            return fail("{} does not exist: the kvm module is not loaded or this machine has no "
                        "hardware virtualization",
                        path);
        if (e == EACCES || e == EPERM)
            return fail("no permission to open {}: run as root or join the group owning it", path);
        errno = e;
        return fail_errno("cannot open {}", path);
    }
    System sys{UniqueFd(raw)};
    // A regular file at /dev/kvm (what a shell's read-write redirection of the path leaves behind,
    // as root, when the node is missing) answers every ioctl with ENOTTY: say what it is instead.
    struct stat st {};
    if (::fstat(raw, &st) == 0 && !S_ISCHR(st.st_mode))
        return fail("{} is not the KVM character device but a {}: remove it; this machine has no "
                    "usable KVM ({})",
                    path, S_ISREG(st.st_mode) ? "regular file" : "non-device file",
                    S_ISREG(st.st_mode)
                        ? "a shell's read-write redirection of the path creates one; test for the device "
                          "with [ -c PATH ]"
                        : "load kvm_intel or kvm_amd");
    int version = ::ioctl(raw, KVM_GET_API_VERSION, 0);
    if (version < 0)
        return fail("{} is a character device but not KVM's (it does not answer KVM_GET_API_VERSION: "
                    "{}); this machine has no usable KVM at that path",
                    path, std::strerror(errno));
    if (version != KVM_API_VERSION)
        return fail("{} speaks KVM API version {}, kestrel needs {}", path, version,
                    KVM_API_VERSION);
    for (const auto& c : kRequiredCaps)
        if (sys.check_extension(c.cap) <= 0)
            return fail("host KVM lacks {}, which kestrel needs", c.name);
    int sz = ::ioctl(raw, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz < static_cast<int>(sizeof(kvm_run))) return fail_errno("KVM_GET_VCPU_MMAP_SIZE");
    sys.vcpu_mmap_size_ = static_cast<size_t>(sz);
    return sys;
}

int System::check_extension(long cap) const {
    return ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
}

Result<std::vector<kvm_cpuid_entry2>> System::supported_cpuid() const {
    // api.rst §4.46: grow the buffer until KVM stops answering E2BIG.
    for (uint32_t n = 64; n <= 4096; n *= 2) {
        size_t bytes = sizeof(uapi::FlexHeader) + n * sizeof(kvm_cpuid_entry2);
        auto buf = std::make_unique<uint8_t[]>(bytes);
        std::memset(buf.get(), 0, bytes);
        auto* h = reinterpret_cast<uapi::FlexHeader*>(buf.get());
        h->count = n;
        if (::ioctl(fd_.get(), uapi::kGetSupportedCpuid, buf.get()) == 0) {
            std::vector<kvm_cpuid_entry2> out(h->count);
            std::memcpy(out.data(), buf.get() + sizeof(uapi::FlexHeader),
                        h->count * sizeof(kvm_cpuid_entry2));
            return out;
        }
        if (errno != E2BIG) return fail_errno("KVM_GET_SUPPORTED_CPUID");
    }
    return fail("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

Result<std::vector<uint32_t>> System::msr_index_list() const {
    // api.rst §4.3: E2BIG with nmsrs set to the number needed.
    for (uint32_t n = 256; n <= 65536; n *= 4) {
        std::vector<uint32_t> buf(1 + n);
        buf[0] = n;
        if (::ioctl(fd_.get(), uapi::kGetMsrIndexList, buf.data()) == 0)
            return std::vector<uint32_t>(buf.begin() + 1, buf.begin() + 1 + std::min(buf[0], n));
        if (errno != E2BIG) return fail_errno("KVM_GET_MSR_INDEX_LIST");
    }
    return fail("KVM_GET_MSR_INDEX_LIST: more than 65536 MSRs");
}

bool System::host_is_pvm() {
    // Looked up once (the VM's build asks first): a vCPU's stop message asks again, on a
    // thread whose seccomp filter has no stat().
    static const bool pvm = [] {
        struct stat st;
        return ::stat("/sys/module/kvm_pvm", &st) == 0;
    }();
    return pvm;
}

Result<Vm> Vm::create(const System& sys) {
    int raw = ::ioctl(sys.fd(), KVM_CREATE_VM, 0);
    if (raw < 0) return fail_errno("KVM_CREATE_VM");
    return Vm(UniqueFd(raw));
}

Result<void> Vm::set_user_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size,
                                        void* host, uint32_t flags) {
    kvm_userspace_memory_region r{slot, flags, guest_phys, size,
                                  reinterpret_cast<uint64_t>(host)};
    if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return fail_errno("KVM_SET_USER_MEMORY_REGION slot {} at {:#x}+{:#x}", slot, guest_phys,
                          size);
    return {};
}

Result<void> Vm::set_tss_and_identity_map(uint64_t tss_addr, uint64_t identity_map_addr) {
    if (::ioctl(fd_.get(), KVM_SET_TSS_ADDR, tss_addr) < 0) return fail_errno("KVM_SET_TSS_ADDR");
    uint64_t a = identity_map_addr;
    if (::ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &a) < 0)
        return fail_errno("KVM_SET_IDENTITY_MAP_ADDR");
    return {};
}

Result<void> Vm::create_irqchip() {
    if (::ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) return fail_errno("KVM_CREATE_IRQCHIP");
    return {};
}

Result<void> Vm::create_split_irqchip(uint32_t ioapic_pins) {
    kvm_enable_cap cap{};
    cap.cap = KVM_CAP_SPLIT_IRQCHIP;
    cap.args[0] = ioapic_pins;
    return set(fd_.get(), KVM_ENABLE_CAP, cap, "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)");
}

Result<void> Vm::signal_msi(uint64_t address, uint32_t data) {
    kvm_msi m{};
    m.address_lo = static_cast<uint32_t>(address);
    m.address_hi = static_cast<uint32_t>(address >> 32);
    m.data = data;
    // > 0: delivered, 0: the guest blocked it (e.g. APIC disabled), < 0: error.
    if (::ioctl(fd_.get(), KVM_SIGNAL_MSI, &m) < 0) return fail_errno("KVM_SIGNAL_MSI");
    return {};
}

Result<void> Vm::create_pit2() {
    // The dummy speaker keeps port 0x61 in the kernel (api.rst §4.54).
    kvm_pit_config cfg{};
    cfg.flags = KVM_PIT_SPEAKER_DUMMY;
    return set(fd_.get(), KVM_CREATE_PIT2, cfg, "KVM_CREATE_PIT2");
}

Result<void> Vm::irq_line(uint32_t irq, bool level) {
    kvm_irq_level l{};
    l.irq = irq;
    l.level = level ? 1 : 0;
    return set(fd_.get(), KVM_IRQ_LINE, l, "KVM_IRQ_LINE");
}

Result<void> Vm::set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries) {
    if (flex_ioctl(fd_.get(), uapi::kSetGsiRouting, entries) < 0)
        return fail_errno("KVM_SET_GSI_ROUTING ({} routes)", entries.size());
    return {};
}

Result<void> Vm::irqfd(int eventfd, uint32_t gsi, bool assign) {
    kvm_irqfd f{};
    f.fd = static_cast<uint32_t>(eventfd);
    f.gsi = gsi;
    f.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN;
    return set(fd_.get(), KVM_IRQFD, f, "KVM_IRQFD");
}

Result<void> Vm::ioeventfd(uint64_t addr, uint32_t len, int eventfd, bool assign) {
    kvm_ioeventfd e{};
    e.addr = addr;
    e.len = len;
    e.fd = eventfd;
    e.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN;
    if (::ioctl(fd_.get(), KVM_IOEVENTFD, &e) < 0)
        return fail_errno("KVM_IOEVENTFD at {:#x}", addr);
    return {};
}

Result<Vcpu> Vcpu::create(const System& sys, const Vm& vm, uint32_t index) {
    int raw = ::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
    if (raw < 0) return fail_errno("KVM_CREATE_VCPU {}", index);
    UniqueFd fd(raw);
    auto run = TRY(Mapping::of_fd(fd.get(), sys.vcpu_mmap_size()));
    return Vcpu(std::move(fd), std::move(run), index);
}

Result<bool> Vcpu::run() {
    if (::ioctl(fd_.get(), KVM_RUN, 0) == 0) return true;
    if (errno == EINTR || errno == EAGAIN) return false;
    return fail_errno("KVM_RUN on vCPU {}", index_);
}

Result<bool> Vcpu::kvmclock_ctrl() {
    if (::ioctl(fd_.get(), KVM_KVMCLOCK_CTRL, 0) == 0) return true;
    if (errno == EINVAL) return false;  // no kvm-clock page registered by the guest
    return fail_errno("KVM_KVMCLOCK_CTRL on vCPU {}", index_);
}

Result<kvm_regs> Vcpu::get_regs() const { return get<kvm_regs>(fd_.get(), KVM_GET_REGS, "KVM_GET_REGS"); }
Result<void> Vcpu::set_regs(const kvm_regs& r) { return set(fd_.get(), KVM_SET_REGS, r, "KVM_SET_REGS"); }
Result<kvm_sregs> Vcpu::get_sregs() const { return get<kvm_sregs>(fd_.get(), KVM_GET_SREGS, "KVM_GET_SREGS"); }
Result<void> Vcpu::set_sregs(const kvm_sregs& s) { return set(fd_.get(), KVM_SET_SREGS, s, "KVM_SET_SREGS"); }
Result<void> Vcpu::set_fpu(const kvm_fpu& f) { return set(fd_.get(), KVM_SET_FPU, f, "KVM_SET_FPU"); }
Result<kvm_lapic_state> Vcpu::get_lapic() const {
    return get<kvm_lapic_state>(fd_.get(), KVM_GET_LAPIC, "KVM_GET_LAPIC");
}
Result<void> Vcpu::set_lapic(const kvm_lapic_state& l) {
    return set(fd_.get(), KVM_SET_LAPIC, l, "KVM_SET_LAPIC");
}


Result<void> Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
    if (flex_ioctl(fd_.get(), uapi::kSetCpuid2, entries) < 0) return fail_errno("KVM_SET_CPUID2");
    return {};
}

Result<void> Vcpu::set_msrs(const std::vector<kvm_msr_entry>& entries) {
    int n = flex_ioctl(fd_.get(), uapi::kSetMsrs, entries);
    if (n < 0) return fail_errno("KVM_SET_MSRS");
    // KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set.
    if (static_cast<size_t>(n) != entries.size())
        return fail("KVM_SET_MSRS refused MSR {:#x}", entries[static_cast<size_t>(n)].index);
    return {};
}

Result<void> Vm::get_dirty_log(uint32_t slot, std::span<uint64_t> bitmap) const {
    kvm_dirty_log log{};
    log.slot = slot;
    log.dirty_bitmap = bitmap.data();
    if (::ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) < 0) return fail_errno("KVM_GET_DIRTY_LOG slot {}", slot);
    return {};
}

Result<kvm_clock_data> Vm::get_clock() const { return get<kvm_clock_data>(fd_.get(), KVM_GET_CLOCK, "KVM_GET_CLOCK"); }
Result<void> Vm::set_clock(const kvm_clock_data& c) { return set(fd_.get(), KVM_SET_CLOCK, c, "KVM_SET_CLOCK"); }

Result<kvm_irqchip> Vm::get_irqchip(uint32_t chip_id) const {
    kvm_irqchip c{};
    c.chip_id = chip_id;
    if (::ioctl(fd_.get(), KVM_GET_IRQCHIP, &c) != 0) return fail_errno("KVM_GET_IRQCHIP chip {}", chip_id);
    return c;
}
Result<void> Vm::set_irqchip(const kvm_irqchip& c) { return set(fd_.get(), KVM_SET_IRQCHIP, c, "KVM_SET_IRQCHIP"); }
Result<kvm_pit_state2> Vm::get_pit2() const { return get<kvm_pit_state2>(fd_.get(), KVM_GET_PIT2, "KVM_GET_PIT2"); }
Result<void> Vm::set_pit2(const kvm_pit_state2& p) { return set(fd_.get(), KVM_SET_PIT2, p, "KVM_SET_PIT2"); }

Result<kvm_mp_state> Vcpu::get_mp_state() const {
    return get<kvm_mp_state>(fd_.get(), KVM_GET_MP_STATE, "KVM_GET_MP_STATE");
}
Result<void> Vcpu::set_mp_state(const kvm_mp_state& s) {
    return set(fd_.get(), KVM_SET_MP_STATE, s, "KVM_SET_MP_STATE");
}
Result<uapi::Xsave> Vcpu::get_xsave() const { return get<uapi::Xsave>(fd_.get(), uapi::kGetXsave, "KVM_GET_XSAVE"); }
Result<void> Vcpu::set_xsave(const uapi::Xsave& x) { return set(fd_.get(), uapi::kSetXsave, x, "KVM_SET_XSAVE"); }
Result<kvm_xcrs> Vcpu::get_xcrs() const { return get<kvm_xcrs>(fd_.get(), KVM_GET_XCRS, "KVM_GET_XCRS"); }
Result<void> Vcpu::set_xcrs(const kvm_xcrs& x) { return set(fd_.get(), KVM_SET_XCRS, x, "KVM_SET_XCRS"); }
Result<kvm_debugregs> Vcpu::get_debugregs() const {
    return get<kvm_debugregs>(fd_.get(), KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS");
}
Result<void> Vcpu::set_debugregs(const kvm_debugregs& d) {
    return set(fd_.get(), KVM_SET_DEBUGREGS, d, "KVM_SET_DEBUGREGS");
}
Result<kvm_vcpu_events> Vcpu::get_vcpu_events() const {
    return get<kvm_vcpu_events>(fd_.get(), KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS");
}
Result<void> Vcpu::set_vcpu_events(const kvm_vcpu_events& e) {
    return set(fd_.get(), KVM_SET_VCPU_EVENTS, e, "KVM_SET_VCPU_EVENTS");
}

Result<std::vector<kvm_msr_entry>> Vcpu::get_msrs(const std::vector<uint32_t>& indices) const {
    std::vector<kvm_msr_entry> entries(indices.size());
    for (size_t i = 0; i < indices.size(); ++i) entries[i].index = indices[i];
    int n = flex_ioctl(fd_.get(), uapi::kGetMsrs, std::span<kvm_msr_entry>(entries));
    if (n < 0) return fail_errno("KVM_GET_MSRS");
    // Like KVM_SET_MSRS, it stops at the first MSR it cannot read and returns how many it read.
    if (static_cast<size_t>(n) != entries.size())
        return fail("KVM_GET_MSRS cannot read MSR {:#x}", entries[static_cast<size_t>(n)].index);
    return entries;
}

Result<size_t> Vcpu::count_readable_msrs(std::span<kvm_msr_entry> entries) const {
    int n = flex_ioctl(fd_.get(), uapi::kGetMsrs, entries);
    if (n < 0) return fail_errno("KVM_GET_MSRS");
    return static_cast<size_t>(n);
}

Result<kvm_translation> Vcpu::translate(uint64_t linear) const {
    kvm_translation t{};
    t.linear_address = linear;
    if (::ioctl(fd_.get(), KVM_TRANSLATE, &t) < 0) return fail_errno("KVM_TRANSLATE");
    return t;
}

}  // namespace kestrel::kvm
