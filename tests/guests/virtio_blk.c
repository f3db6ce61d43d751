/* virtio_blk: a minimal polled virtio-blk driver, run in 64-bit mode by virtio_blk_entry.S.
 *
 * It finds the modern virtio-blk function (1af4:1042) on PCI bus 0 through configuration
 * mechanism #1 (ports 0xcf8/0xcfc), locates the virtio structures through its vendor
 * capabilities (virtio 1.2 §4.1.4), initialises it per §3.1.1 with one split virtqueue of 8
 * entries (§2.7), MSI-X left disabled, and completes every request by polling the used ring.
 * Requests go one at a time, always as descriptor chain 0..n:
 *   - read sectors 0..15 (two 4 KiB data descriptors) and compare with the host's pattern;
 *     ISR bit 0 must then be set (MSI-X off, §4.1.4.5) and clear once read;
 *   - read-write disk: write sectors 4..7 with the guest pattern, FLUSH, read 2..9 back;
 *     read-only disk (VIRTIO_BLK_F_RO offered): the same write, which a driver would not
 *     normally send, must come back VIRTIO_BLK_S_IOERR (§5.2.6.2) and change nothing;
 *   - GET_ID must return the serial "kvm-guest-disk";
 *   - reads at and across capacity must come back VIRTIO_BLK_S_IOERR;
 *   - a final reset must read back as status 0.
 * The kernel command line says which disk to expect: "vblk=ro" for read-only, else read-write;
 * "vblk=flood" and "vblk=reset-hung" select the two modes described further down instead.
 * With "vblk=hold" as well, a guest whose checks passed does not exit: it prints the data bytes
 * its successful reads and writes moved ("virtio-blk hold read-bytes=N write-bytes=M") and
 * halts until kestrel is stopped (the kvm suite's metrics case scrapes kestrel meanwhile).
 * Progress goes to COM1; the return value is the debug-exit code (0 = every check passed,
 * else a VBLK_EXIT_* code of virtio_blk_guest.h). About 40k instructions on success, plus
 * the used-ring spins while the host completes I/O (printed as empty-polls; a few thousand
 * under kestrel on kvm-pvm) and ~1000 port I/O exits, mostly serial output.
 *
 * Host pattern (written by tests/kvm/run-kvm-tests): 64-bit little-endian word w (0..63) of
 * sector s is HOST_MAGIC | s << 8 | w; the guest writes GUEST_MAGIC | s << 8 | w. */
#include <stddef.h>
#include <stdint.h>

#include "virtio_blk_guest.h"

#define HOST_MAGIC  0x484f535400000000ull   /* "HOST" in the top bytes */
#define GUEST_MAGIC 0x4755455300000000ull   /* "GUES" */
#define SERIAL      "kvm-guest-disk"

#define COM1            0x3f8
#define COM1_LSR        0x3fd
#define LSR_THRE        0x20
#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc
#define HVM_START_MAGIC 0x336ec578
#define EXIT_BAD_START_INFO 80      /* same code as guest.h's */

/* PCI 3.0 §6.1 configuration header registers. */
#define PCI_ID          0x00
#define PCI_COMMAND     0x04
#define PCI_STATUS      0x06
#define PCI_BAR0        0x10
#define PCI_CAP_PTR     0x34
#define CMD_MEMORY      (1 << 1)
#define CMD_BUS_MASTER  (1 << 2)
#define STATUS_CAP_LIST (1 << 4)
#define VIRTIO_BLK_ID   0x10421af4u /* device 0x1042 << 16 | vendor 0x1af4 (§4.1.2) */

#define BAR_WINDOW_START 0xc0000000ull  /* boot/x86_layout.hpp kPciMmio32Start/Size */
#define BAR_WINDOW_END   0xe0000000ull

/* virtio 1.2 §4.1.4 struct virtio_pci_cap: byte offsets from the capability start. */
#define CAP_VNDR     0
#define CAP_NEXT     1
#define CAP_LEN      2
#define CAP_CFG_TYPE 3
#define CAP_BAR      4
#define CAP_OFFSET   8
#define CAP_LENGTH   12
#define CAP_NOTIFY_MULT 16          /* §4.1.4.4 virtio_pci_notify_cap */
#define PCI_CAP_VENDOR 0x09
enum { CFG_COMMON = 1, CFG_NOTIFY = 2, CFG_ISR = 3, CFG_DEVICE = 4, CFG_COUNT = 5 };

/* §4.1.4.3 struct virtio_pci_common_cfg offsets. */
#define CC_DFSELECT   0x00
#define CC_DF         0x04
#define CC_GFSELECT   0x08
#define CC_GF         0x0c
#define CC_STATUS     0x14
#define CC_CFG_GEN    0x15
#define CC_Q_SELECT   0x16
#define CC_Q_SIZE     0x18
#define CC_Q_ENABLE   0x1c
#define CC_Q_NOTIFY_OFF 0x1e
#define CC_Q_DESC     0x20
#define CC_Q_DRIVER   0x28
#define CC_Q_DEVICE   0x30
#define CC_MIN_LENGTH 0x38

/* §2.1 device status bits. */
#define ST_ACKNOWLEDGE 1
#define ST_DRIVER      2
#define ST_DRIVER_OK   4
#define ST_FEATURES_OK 8
#define ST_NEEDS_RESET 0x40
#define ST_FAILED      0x80

/* Feature bits: §6 VIRTIO_F_VERSION_1; §5.2.3 VIRTIO_BLK_F_RO, VIRTIO_BLK_F_FLUSH. */
#define F_VERSION_1 (1ull << 32)
#define F_BLK_RO    (1ull << 5)
#define F_BLK_FLUSH (1ull << 9)

/* §5.2.6 request types and status values. */
#define T_IN     0
#define T_OUT    1
#define T_FLUSH  4
#define T_GET_ID 8
#define S_OK     0
#define S_IOERR  1
#define ID_BYTES 20

/* §2.7.5 descriptor flags. */
#define DESC_F_NEXT  1
#define DESC_F_WRITE 2

#define QSIZE   8
#define SECTOR  512
#define NSECT   16          /* sectors 0..15 hold the host pattern and are read back */
#define WR_FIRST 4          /* sectors 4..7 are written */
#define WR_COUNT 4
#define RB_FIRST 2          /* read-back window 2..9: the written sectors and two each side */
#define RB_COUNT 8
#define REQUEST_STALL_TICKS 10  /* RTC seconds without the request's completion before giving up */

/* §2.7 split virtqueue; one page, each part at its required alignment (16/2/4). */
struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc is 16 bytes (§2.7.5)");

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct vq_page {
    struct virtq_desc desc[QSIZE];            /* 0x000 */
    uint8_t pad0[0x100 - QSIZE * 16];
    uint16_t avail_flags;                     /* 0x100 §2.7.6 */
    uint16_t avail_idx;
    uint16_t avail_ring[QSIZE];
    uint16_t used_event;
    uint8_t pad1[0x200 - 0x100 - 6 - 2 * QSIZE];
    uint16_t used_flags;                      /* 0x200 §2.7.8 */
    uint16_t used_idx;
    struct virtq_used_elem used_ring[QSIZE];
    uint16_t avail_event;
};
_Static_assert(offsetof(struct vq_page, avail_flags) == 0x100, "avail ring offset");
_Static_assert(offsetof(struct vq_page, used_flags) == 0x200, "used ring offset");

struct blk_req_hdr {                          /* §5.2.6 struct virtio_blk_req, header part */
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
_Static_assert(sizeof(struct blk_req_hdr) == 16, "virtio_blk_req header is 16 bytes");

static struct vq_page vq __attribute__((aligned(4096)));
static uint64_t data[NSECT * SECTOR / 8] __attribute__((aligned(4096)));
static struct blk_req_hdr req_hdr;
static uint8_t req_status;
static uint8_t id_buf[ID_BYTES];
static uint16_t avail_shadow, used_shadow;
static uint64_t polls;  /* used-ring reads that found nothing new: the cost of waiting */

static uint64_t common_cfg, isr_cfg, device_cfg, notify_base, notify_len, notify_addr;
static uint32_t notify_mult;

#define barrier() __asm__ volatile("" ::: "memory")

/* Freestanding GCC may still emit calls to these for copies and clears. */
void *memset(void *d, int c, size_t n) {
    uint8_t *p = d;
    while (n--) *p++ = (uint8_t)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--) *p++ = *q++;
    return d;
}

/* ---- port and memory-mapped I/O --------------------------------------------------------- */

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port) {
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port) {
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* §4.1.3.1: each field is accessed with its own width. */
static inline uint8_t r8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t r16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t r32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void w8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void w16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void w32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline void w64_halves(uint64_t a, uint64_t v) {  /* §4.1.3.1: as two 32-bit writes */
    w32(a, (uint32_t)v);
    w32(a + 4, (uint32_t)(v >> 32));
}

/* ---- serial ----------------------------------------------------------------------------- */

static void putc(char c) {
    for (int n = 100000; n && !(inb(COM1_LSR) & LSR_THRE); n--) {
    }
    outb(COM1, (uint8_t)c);
}
static void puts(const char *s) {
    while (*s) putc(*s++);
}
static void puthex(uint64_t v, int digits) {
    while (digits--) putc("0123456789abcdef"[(v >> (digits * 4)) & 0xf]);
}
static void putdec(uint64_t v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do buf[--i] = (char)('0' + v % 10); while (v /= 10);
    puts(buf + i);
}
static int fail(int code, const char *what) {
    puts("virtio-blk FAIL: ");
    puts(what);
    puts("\n");
    return code;
}

/* ---- PCI configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) --------------------------------- */

static void cfg_select(unsigned dev, unsigned reg) {
    outl(PCI_CONFIG_ADDR, 0x80000000u | dev << 11 | (reg & 0xfc));
}
static uint32_t cfg_read32(unsigned dev, unsigned reg) {
    cfg_select(dev, reg);
    return inl(PCI_CONFIG_DATA);
}
static uint16_t cfg_read16(unsigned dev, unsigned reg) {
    cfg_select(dev, reg);
    return inw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)));
}
static uint8_t cfg_read8(unsigned dev, unsigned reg) {
    cfg_select(dev, reg);
    return inb((uint16_t)(PCI_CONFIG_DATA + (reg & 3)));
}
static void cfg_write16(unsigned dev, unsigned reg, uint16_t v) {
    cfg_select(dev, reg);
    outw((uint16_t)(PCI_CONFIG_DATA + (reg & 2)), v);
}

/* Address of memory BAR `bar` (PCI 3.0 §6.2.5.1), or 0 if it is not one inside the window. */
static uint64_t bar_address(unsigned dev, unsigned bar) {
    if (bar > 5) return 0;
    uint32_t lo = cfg_read32(dev, PCI_BAR0 + 4 * bar);
    if (lo & 1) return 0;                     /* I/O BAR */
    uint64_t base = lo & ~0xfu;
    if (((lo >> 1) & 3) == 2) {               /* 64-bit: the next BAR holds the top half */
        if (bar == 5) return 0;
        base |= (uint64_t)cfg_read32(dev, PCI_BAR0 + 4 * (bar + 1)) << 32;
    }
    return base >= BAR_WINDOW_START && base < BAR_WINDOW_END ? base : 0;
}

/* ---- requests --------------------------------------------------------------------------- */

struct seg {
    void *addr;
    uint32_t len;
    uint16_t flags;  /* 0 = device-readable, DESC_F_WRITE = device-writable */
};

static void set_desc(unsigned i, const void *addr, uint32_t len, uint16_t flags) {
    vq.desc[i].addr = (uint64_t)(uintptr_t)addr;
    vq.desc[i].len = len;
    vq.desc[i].flags = flags;
    vq.desc[i].next = (uint16_t)(i + 1);
}

#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71

/* The RTC's seconds register (MC146818 register 0): a wall clock the polls can count by. */
static uint8_t rtc_seconds(void) {
    outb(CMOS_INDEX, 0);
    return inb(CMOS_DATA);
}

/* Sends header + segs + status as chain 0..n and polls for its completion. Returns the
 * status byte (0xff if the device never wrote it), or -code on a transport failure. */
static int request(uint32_t type, uint64_t sector, const struct seg *segs, unsigned nsegs,
                   uint32_t expect_len) {
    req_hdr.type = type;
    req_hdr.reserved = 0;
    req_hdr.sector = sector;
    req_status = 0xff;
    set_desc(0, &req_hdr, sizeof req_hdr, DESC_F_NEXT);
    for (unsigned i = 0; i < nsegs; i++)
        set_desc(1 + i, segs[i].addr, segs[i].len, (uint16_t)(segs[i].flags | DESC_F_NEXT));
    set_desc(1 + nsegs, &req_status, 1, DESC_F_WRITE);

    vq.avail_ring[avail_shadow % QSIZE] = 0;
    barrier();  /* descriptors and ring entry before the index (§2.7.13.2; x86 keeps store order) */
    *(volatile uint16_t *)&vq.avail_idx = ++avail_shadow;
    barrier();
    w16(notify_addr, 0);  /* §4.1.5.2: the queue index */

    /* Given up after REQUEST_STALL_TICKS RTC seconds, as flood_round() does: a poll count
     * would mean seconds on kvm-pvm's emulator and milliseconds on hardware or in the nested
     * host, where one request's I/O through L1 takes longer than that. */
    unsigned ticks = 0;
    uint8_t sec = rtc_seconds();
    for (uint32_t idle = 0; *(volatile uint16_t *)&vq.used_idx == used_shadow;) {
        polls++;
        if (++idle % 4096 == 0 && rtc_seconds() != sec) {
            sec = rtc_seconds();
            if (++ticks >= REQUEST_STALL_TICKS)
                return -fail(VBLK_EXIT_TIMEOUT, "no used-ring entry (request timed out)");
        }
    }
    barrier();
    struct virtq_used_elem e = *(volatile struct virtq_used_elem *)&vq.used_ring[used_shadow % QSIZE];
    used_shadow++;
    uint8_t st = *(volatile uint8_t *)&req_status;
    /* §2.7.8: len is the number of bytes written into the chain, status byte included. */
    if (e.id != 0 || e.len != (st == S_OK ? expect_len : 1u)) {
        puts("virtio-blk used id=");
        putdec(e.id);
        puts(" len=");
        putdec(e.len);
        puts(" status=");
        putdec(st);
        puts("\n");
        return -fail(VBLK_EXIT_BAD_USED, "used element id/len wrong");
    }
    return st;
}

static void fill(uint64_t magic, unsigned first, unsigned count) {
    for (unsigned s = 0; s < count; s++)
        for (unsigned w = 0; w < SECTOR / 8; w++) data[s * (SECTOR / 8) + w] = magic | (uint64_t)(first + s) << 8 | w;
}

/* Sectors first..first+count-1 in data[]: those in wfirst..wfirst+wcount-1 must carry
 * wmagic, the others HOST_MAGIC. Returns 1 if they all match. */
static int check(unsigned first, unsigned count, uint64_t wmagic, unsigned wfirst, unsigned wcount) {
    for (unsigned s = 0; s < count; s++) {
        unsigned sec = first + s;
        uint64_t magic = sec >= wfirst && sec < wfirst + wcount ? wmagic : HOST_MAGIC;
        for (unsigned w = 0; w < SECTOR / 8; w++)
            if (data[s * (SECTOR / 8) + w] != (magic | (uint64_t)sec << 8 | w)) {
                puts("virtio-blk mismatch sector=");
                putdec(sec);
                puts(" word=");
                putdec(w);
                puts(" got=");
                puthex(data[s * (SECTOR / 8) + w], 16);
                puts("\n");
                return 0;
            }
    }
    return 1;
}

static void clear_data(void) {
    for (unsigned i = 0; i < sizeof data / 8; i++) data[i] = 0;
}

static int read_sectors(uint64_t first, unsigned count) {
    struct seg s = {data, count * SECTOR, DESC_F_WRITE};
    return request(T_IN, first, &s, 1, count * SECTOR + 1);
}

/* ---- set-up ----------------------------------------------------------------------------- */

static int cmdline_has(uint32_t start_info, const char *word) {
    uint64_t p = *(volatile uint64_t *)(uintptr_t)(start_info + 24);  /* hvm_start_info.cmdline_paddr */
    if (!p) return 0;
    for (const char *c = (const char *)(uintptr_t)p; *c; c++) {
        unsigned i = 0;
        while (word[i] && c[i] == word[i]) i++;
        if (!word[i]) return 1;
    }
    return 0;
}

static int find_device(unsigned *dev_out) {
    for (unsigned dev = 0; dev < 32; dev++)
        if (cfg_read32(dev, PCI_ID) == VIRTIO_BLK_ID) {
            *dev_out = dev;
            return 0;
        }
    return fail(VBLK_EXIT_NO_DEVICE, "no 1af4:1042 on bus 0");
}

/* §4.1.4.1: the first capability of each cfg_type is the one to use. */
static int find_structures(unsigned dev) {
    uint64_t addr[CFG_COUNT] = {0}, len[CFG_COUNT] = {0};
    if (!(cfg_read16(dev, PCI_STATUS) & STATUS_CAP_LIST))
        return fail(VBLK_EXIT_MISSING_CAP, "no capability list");
    unsigned ptr = cfg_read8(dev, PCI_CAP_PTR) & 0xfc;
    for (unsigned guard = 0; ptr && guard < 48; guard++) {
        if (cfg_read8(dev, ptr + CAP_VNDR) == PCI_CAP_VENDOR) {
            unsigned type = cfg_read8(dev, ptr + CAP_CFG_TYPE);
            if (type >= CFG_COMMON && type <= CFG_DEVICE && !addr[type]) {
                uint64_t base = bar_address(dev, cfg_read8(dev, ptr + CAP_BAR));
                if (!base) return fail(VBLK_EXIT_BAD_BAR, "capability BAR is not a memory BAR in the PCI window");
                addr[type] = base + cfg_read32(dev, ptr + CAP_OFFSET);
                len[type] = cfg_read32(dev, ptr + CAP_LENGTH);
                if (addr[type] + len[type] > BAR_WINDOW_END)
                    return fail(VBLK_EXIT_BAD_BAR, "structure runs past the PCI window");
                if (type == CFG_NOTIFY) {
                    if (cfg_read8(dev, ptr + CAP_LEN) < 20) return fail(VBLK_EXIT_MISSING_CAP, "notify cap_len < 20");
                    notify_mult = cfg_read32(dev, ptr + CAP_NOTIFY_MULT);
                }
            }
        }
        ptr = cfg_read8(dev, ptr + CAP_NEXT) & 0xfc;
    }
    if (!addr[CFG_COMMON] || len[CFG_COMMON] < CC_MIN_LENGTH || !addr[CFG_NOTIFY] || !addr[CFG_ISR] ||
        !len[CFG_ISR] || !addr[CFG_DEVICE] || len[CFG_DEVICE] < 8)
        return fail(VBLK_EXIT_MISSING_CAP, "common/notify/isr/device capability missing or short");
    common_cfg = addr[CFG_COMMON];
    notify_base = addr[CFG_NOTIFY];
    notify_len = len[CFG_NOTIFY];
    isr_cfg = addr[CFG_ISR];
    device_cfg = addr[CFG_DEVICE];

    puts("virtio-blk bar0=");
    puthex(bar_address(dev, 0), 8);
    puts(" common=+");
    puthex(common_cfg - bar_address(dev, 0), 4);
    puts(" notify=+");
    puthex(notify_base - bar_address(dev, 0), 4);
    puts(" mult=");
    putdec(notify_mult);
    puts(" isr=+");
    puthex(isr_cfg - bar_address(dev, 0), 4);
    puts(" device=+");
    puthex(device_cfg - bar_address(dev, 0), 4);
    puts("\n");
    return 0;
}

/* Where queue 0 lives; `size` is a cap going in (a power of 2) and the size used coming out:
 * the device's maximum when that is smaller. */
struct queue_setup {
    uint16_t size;
    uint64_t desc, driver, device;
};

/* virtio 1.2 §3.1.1 steps 1-8, queue 0 per §4.1.5.1.3. Accepts VERSION_1, FLUSH, RO if offered
 * (setting *ro), and of `want` what is offered (*accepted_out gets the whole set). With
 * needs_reset_ok, DEVICE_NEEDS_RESET after DRIVER_OK is not a failure (the device refused the
 * activation): *status_out says. */
static int init_device_with(int *ro, uint64_t want, uint64_t *accepted_out, struct queue_setup *q,
                            int needs_reset_ok, uint8_t *status_out) {
    w8(common_cfg + CC_STATUS, 0);
    int n = 1000;
    while (r8(common_cfg + CC_STATUS) != 0 && --n) {
    }
    if (!n) return fail(VBLK_EXIT_RESET_STUCK, "device_status not 0 after reset");
    w8(common_cfg + CC_STATUS, ST_ACKNOWLEDGE);
    w8(common_cfg + CC_STATUS, ST_ACKNOWLEDGE | ST_DRIVER);

    w32(common_cfg + CC_DFSELECT, 0);
    uint64_t offered = r32(common_cfg + CC_DF);
    w32(common_cfg + CC_DFSELECT, 1);
    offered |= (uint64_t)r32(common_cfg + CC_DF) << 32;
    if (!(offered & F_VERSION_1) || !(offered & F_BLK_FLUSH))
        return fail(VBLK_EXIT_NO_VERSION_1, "VERSION_1 or BLK_F_FLUSH not offered");
    /* Only what this driver handles: RO it honours, FLUSH it uses; nothing else (no EVENT_IDX,
     * INDIRECT_DESC, MQ, SEG_MAX...). */
    uint64_t accepted = F_VERSION_1 | F_BLK_FLUSH | (offered & F_BLK_RO) | (offered & want);
    w32(common_cfg + CC_GFSELECT, 0);
    w32(common_cfg + CC_GF, (uint32_t)accepted);
    w32(common_cfg + CC_GFSELECT, 1);
    w32(common_cfg + CC_GF, (uint32_t)(accepted >> 32));
    w8(common_cfg + CC_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK);
    if (!(r8(common_cfg + CC_STATUS) & ST_FEATURES_OK))
        return fail(VBLK_EXIT_FEATURES_REFUSED, "FEATURES_OK did not stay set");
    *ro = (offered & F_BLK_RO) != 0;
    if (accepted_out) *accepted_out = accepted;
    puts("virtio-blk features offered=");
    puthex(offered, 16);
    puts(" accepted=");
    puthex(accepted, 16);
    puts("\n");

    w16(common_cfg + CC_Q_SELECT, 0);
    uint16_t max = r16(common_cfg + CC_Q_SIZE);
    if (max < QSIZE) return fail(VBLK_EXIT_QUEUE_SETUP, "queue 0 unavailable or smaller than 8");
    if (max < q->size) q->size = max;
    w16(common_cfg + CC_Q_SIZE, q->size);
    w64_halves(common_cfg + CC_Q_DESC, q->desc);
    w64_halves(common_cfg + CC_Q_DRIVER, q->driver);
    w64_halves(common_cfg + CC_Q_DEVICE, q->device);
    uint16_t notify_off = r16(common_cfg + CC_Q_NOTIFY_OFF);
    w16(common_cfg + CC_Q_ENABLE, 1);
    if (r16(common_cfg + CC_Q_SIZE) != q->size || r16(common_cfg + CC_Q_ENABLE) != 1 ||
        r32(common_cfg + CC_Q_DESC) != (uint32_t)q->desc || r32(common_cfg + CC_Q_DEVICE) != (uint32_t)q->device)
        return fail(VBLK_EXIT_QUEUE_SETUP, "queue 0 registers did not take");
    /* §4.1.4.4: cap.offset + queue_notify_off * notify_off_multiplier, inside the structure. */
    uint64_t off = (uint64_t)notify_off * notify_mult;
    if (off + 2 > notify_len) return fail(VBLK_EXIT_QUEUE_SETUP, "queue 0 notify address outside the notify structure");
    notify_addr = notify_base + off;

    w8(common_cfg + CC_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    uint8_t st = r8(common_cfg + CC_STATUS);
    if (status_out) *status_out = st;
    if (!(st & ST_DRIVER_OK) || (st & ST_FAILED) || ((st & ST_NEEDS_RESET) && !needs_reset_ok))
        return fail(VBLK_EXIT_DEVICE_STATUS, "bad device_status after DRIVER_OK");
    puts("virtio-blk queue0 size=");
    putdec(q->size);
    puts(" notify_off=");
    putdec(notify_off);
    puts(" status=");
    puthex(st, 2);
    puts("\n");
    return 0;
}

/* The small queue (vq, QSIZE entries) every mode but the flood uses. */
static int init_device(int *ro) {
    struct queue_setup q = {QSIZE, (uint64_t)(uintptr_t)vq.desc, (uint64_t)(uintptr_t)&vq.avail_flags,
                            (uint64_t)(uintptr_t)&vq.used_flags};
    return init_device_with(ro, 0, 0, &q, 0, 0);
}

/* §4.1.3.1 / §2.5.1: a 64-bit config field as two 32-bit reads, retried until
 * config_generation is the same before and after. */
static uint64_t read_capacity(void) {
    uint64_t v = 0;
    for (int tries = 0; tries < 10; tries++) {
        uint8_t gen = r8(common_cfg + CC_CFG_GEN);
        v = r32(device_cfg) | (uint64_t)r32(device_cfg + 4) << 32;
        if (r8(common_cfg + CC_CFG_GEN) == gen) break;
    }
    return v;
}

#define TRY_STATUS(expr, want, code, what)           \
    do {                                             \
        int st_ = (expr);                            \
        if (st_ < 0) return -st_;                    \
        if (st_ != (want)) {                         \
            puts("virtio-blk status=");              \
            putdec((uint64_t)st_);                   \
            puts("\n");                              \
            return fail((code), (what));             \
        }                                            \
    } while (0)

/* ---- vblk=flood ----------------------------------------------------------------------------
 * The worst a driver can do to the host memory of a `direct` disk (devices/virtio/blk/
 * virtio_blk.hpp, "Host memory budget"): as many requests in flight as the queue holds, each
 * as long as the device allows (seg_max segments of size_max bytes, through one indirect
 * table per request), every segment of every request the same FLOOD_SEG_MAX-byte buffer at
 * an address 8 bytes past a page boundary, so the device must bounce each one. First a read
 * flood at sector 0, checked against the host's pattern (the disk repeats one 32-sector block,
 * so every segment brings the same bytes whatever order they land in), then FLOOD_WRITES
 * writes of the guest's pattern the same way (the host checks the image). */
#define FLOOD_QMAX      256
#define FLOOD_SEGS_MAX  254
#define FLOOD_SEG_MAX   16384u      /* also the segment size when VIRTIO_BLK_F_SIZE_MAX is not offered */
#define FLOOD_SKEW      8
#define FLOOD_WRITES    32
#define FLOOD_HOST_MAGIC  0x464c4f4f00000000ull  /* "FLOO" */
#define FLOOD_GUEST_MAGIC 0x464c4f5700000000ull  /* "FLOW" */
#define F_SIZE_MAX  (1ull << 1)     /* §5.2.3 */
#define F_SEG_MAX   (1ull << 2)
#define F_INDIRECT  (1ull << 28)    /* §6 VIRTIO_F_INDIRECT_DESC */
#define DESC_F_INDIRECT 4
#define CFG_SIZE_MAX 0x08           /* §5.2.4 virtio_blk_config */
#define CFG_SEG_MAX  0x0c
#define FLOOD_STALL_TICKS 20       /* RTC seconds without any completion before giving up */
static struct virtq_desc fq_desc[FLOOD_QMAX] __attribute__((aligned(4096)));
static struct {
    uint16_t flags, idx, ring[FLOOD_QMAX], used_event;
} fq_avail __attribute__((aligned(4096)));
static struct {
    uint16_t flags, idx;
    struct virtq_used_elem ring[FLOOD_QMAX];
    uint16_t avail_event;
} fq_used __attribute__((aligned(4096)));
static struct virtq_desc fq_tables[FLOOD_QMAX][FLOOD_SEGS_MAX + 2] __attribute__((aligned(16)));
static uint8_t flood_buf[FLOOD_SEG_MAX + 64] __attribute__((aligned(4096)));
static uint8_t flood_status[FLOOD_QMAX];
static uint8_t flood_seen[FLOOD_QMAX];
static struct blk_req_hdr flood_hdr_in, flood_hdr_out;

static void flood_tables(unsigned n, const struct blk_req_hdr *hdr, uint16_t data_flags, unsigned segs, uint32_t seg) {
    for (unsigned i = 0; i < n; i++) {
        struct virtq_desc *t = fq_tables[i];
        t[0] = (struct virtq_desc){(uint64_t)(uintptr_t)hdr, sizeof *hdr, DESC_F_NEXT, 1};
        for (unsigned k = 0; k < segs; k++)
            t[1 + k] = (struct virtq_desc){(uint64_t)(uintptr_t)(flood_buf + FLOOD_SKEW), seg,
                                           (uint16_t)(data_flags | DESC_F_NEXT), (uint16_t)(2 + k)};
        t[1 + segs] = (struct virtq_desc){(uint64_t)(uintptr_t)&flood_status[i], 1, DESC_F_WRITE, 0};
        fq_desc[i] = (struct virtq_desc){(uint64_t)(uintptr_t)t, (segs + 2) * 16, DESC_F_INDIRECT, 0};
        flood_status[i] = 0xff;
        flood_seen[i] = 0;
    }
}

/* Publishes heads 0..n-1 at once (ring positions first..first+n-1), notifies once, and polls
 * until all n are used: each exactly once, with used len `len` and status OK. */
static int flood_round(uint16_t first, unsigned n, unsigned qsize, uint32_t len) {
    for (unsigned i = 0; i < n; i++) fq_avail.ring[(first + i) % qsize] = (uint16_t)i;
    barrier();
    *(volatile uint16_t *)&fq_avail.idx = (uint16_t)(first + n);
    barrier();
    w16(notify_addr, 0);
    uint16_t seen = first;
    /* The give-up time is counted in RTC seconds: a poll count would mean seconds on kvm-pvm's
     * emulator and milliseconds on hardware. */
    unsigned ticks = 0;
    uint8_t sec = rtc_seconds();
    for (uint32_t idle = 0; seen != (uint16_t)(first + n);) {
        if (*(volatile uint16_t *)&fq_used.idx == seen) {
            polls++;
            if (++idle % 4096 == 0 && rtc_seconds() != sec) {
                sec = rtc_seconds();
                if (++ticks >= FLOOD_STALL_TICKS) return fail(VBLK_EXIT_FLOOD_STATUS, "flood: no completion for too long");
            }
            continue;
        }
        barrier();
        struct virtq_used_elem e = *(volatile struct virtq_used_elem *)&fq_used.ring[seen % qsize];
        seen++;
        ticks = 0;
        if (e.id >= n || flood_seen[e.id] || e.len != len || *(volatile uint8_t *)&flood_status[e.id] != S_OK) {
            puts("virtio-blk flood used id=");
            putdec(e.id);
            puts(" len=");
            putdec(e.len);
            puts("\n");
            return fail(VBLK_EXIT_FLOOD_STATUS, "flood request came back wrong");
        }
        flood_seen[e.id] = 1;
    }
    return 0;
}

/* Sector k (0..sectors-1) of the shared buffer holds magic | k << 8 | w in word w; and the
 * bytes just before and after it are still zero. */
static int flood_check(uint64_t magic, unsigned sectors) {
    const uint8_t *b = flood_buf + FLOOD_SKEW;
    for (unsigned k = 0; k < sectors; k++)
        for (unsigned w = 0; w < SECTOR / 8; w++) {
            uint64_t v;
            memcpy(&v, b + k * SECTOR + w * 8, 8);
            if (v != (magic | (uint64_t)k << 8 | w)) {
                puts("virtio-blk flood mismatch sector=");
                putdec(k);
                puts(" word=");
                putdec(w);
                puts(" got=");
                puthex(v, 16);
                puts("\n");
                return 0;
            }
        }
    for (unsigned i = 0; i < FLOOD_SKEW; i++)
        if (flood_buf[i] || b[sectors * SECTOR + i]) return 0;
    return 1;
}

static int flood(void) {
    int ro, r;
    uint64_t accepted;
    struct queue_setup q = {FLOOD_QMAX, (uint64_t)(uintptr_t)fq_desc, (uint64_t)(uintptr_t)&fq_avail,
                            (uint64_t)(uintptr_t)&fq_used};
    if ((r = init_device_with(&ro, F_INDIRECT | F_SEG_MAX | F_SIZE_MAX, &accepted, &q, 0, 0))) return r;
    if (!(accepted & F_INDIRECT)) return fail(VBLK_EXIT_FLOOD_SETUP, "VIRTIO_F_INDIRECT_DESC not offered");
    unsigned segs = FLOOD_SEGS_MAX;
    if (accepted & F_SEG_MAX) {
        uint32_t m = r32(device_cfg + CFG_SEG_MAX);
        if (m && m < segs) segs = m;
    }
    uint32_t seg = FLOOD_SEG_MAX;
    if (accepted & F_SIZE_MAX) {
        uint32_t m = r32(device_cfg + CFG_SIZE_MAX) / SECTOR * SECTOR;
        if (m && m < seg) seg = m;
    }
    uint64_t bytes = (uint64_t)segs * seg;
    if (read_capacity() < bytes / SECTOR) return fail(VBLK_EXIT_FLOOD_SETUP, "disk smaller than one flood request");
    unsigned n = q.size;
    puts("virtio-blk flood queue=");
    putdec(n);
    puts(" segments=");
    putdec(segs);
    puts(" segment-bytes=");
    putdec(seg);
    puts(" request-bytes=");
    putdec(bytes);
    puts(" buffer=+");
    putdec(FLOOD_SKEW);
    puts("\n");

    flood_hdr_in = (struct blk_req_hdr){T_IN, 0, 0};
    flood_tables(n, &flood_hdr_in, DESC_F_WRITE, segs, seg);
    if ((r = flood_round(0, n, q.size, (uint32_t)bytes + 1))) return r;
    if (!flood_check(FLOOD_HOST_MAGIC, seg / SECTOR))
        return fail(VBLK_EXIT_FLOOD_DATA, "flood: the shared buffer does not hold the host's pattern");
    puts("virtio-blk flood reads=");
    putdec(n);
    puts(" data-ok\n");

    uint8_t *b = flood_buf + FLOOD_SKEW;
    for (unsigned k = 0; k < seg / SECTOR; k++)
        for (unsigned w = 0; w < SECTOR / 8; w++) {
            uint64_t v = FLOOD_GUEST_MAGIC | (uint64_t)k << 8 | w;
            memcpy(b + k * SECTOR + w * 8, &v, 8);
        }
    unsigned m = n < FLOOD_WRITES ? n : FLOOD_WRITES;
    flood_hdr_out = (struct blk_req_hdr){T_OUT, 0, 0};
    flood_tables(m, &flood_hdr_out, 0, segs, seg);
    if ((r = flood_round((uint16_t)n, m, q.size, 1))) return r;
    puts("virtio-blk flood writes=");
    putdec(m);
    puts(" ok\n");

    /* §2.4: reset with the bounce pool in use a moment ago. */
    w8(common_cfg + CC_STATUS, 0);
    if (r8(common_cfg + CC_STATUS) != 0) return fail(VBLK_EXIT_RESET_STUCK, "device_status not 0 after the reset");
    puts("virtio-blk flood empty-polls=");
    putdec(polls);
    puts("\nvirtio-blk flood-ok\n");
    return 0;
}

/* ---- vblk=reset-hung ------------------------------------------------------------------------
 * The disk is a FUSE file whose reads the host holds unanswered (tests/kvm/run-kvm-tests). A
 * read is sent and left pending; the reset that follows must come back (the device gives up
 * after its bound) with status 0, and an immediate re-activation must be refused
 * (DEVICE_NEEDS_RESET: the old read is still in host I/O and may yet write into guest RAM).
 * The line "reset-done" tells the runner to let the reads through; the guest then resets and
 * re-activates until the device accepts, checks before each attempt that nothing reached the
 * old used ring or status byte, and reads sectors 0..15 through the answering store. */
#define HUNG_ATTEMPTS      20       /* re-activation attempts, one RTC second apart */

static void zero_vq(void) { memset(&vq, 0, sizeof vq); avail_shadow = used_shadow = 0; }

/* Waits for the RTC's seconds register (CMOS 0) to change: up to a second of host time, the
 * same on an emulator and on hardware, where a spin loop's length would not be. */
static void wait_rtc_tick(void) {
    uint8_t s0 = rtc_seconds();
    for (uint32_t n = 50000000; n && rtc_seconds() == s0; n--) {
    }
}

static int reset_hung(void) {
    int ro, r;
    if ((r = init_device(&ro))) return r;
    req_hdr = (struct blk_req_hdr){T_IN, 0, 0};
    req_status = 0xee;
    set_desc(0, &req_hdr, sizeof req_hdr, DESC_F_NEXT);
    set_desc(1, data, 2 * SECTOR, DESC_F_WRITE | DESC_F_NEXT);
    set_desc(2, &req_status, 1, DESC_F_WRITE);
    vq.avail_ring[0] = 0;
    barrier();
    *(volatile uint16_t *)&vq.avail_idx = ++avail_shadow;
    barrier();
    w16(notify_addr, 0);
    /* Two RTC ticks (at least a second): time for the host to hand the read to a kernel
     * worker, where it really waits on the store (before that a cancel could still take it
     * back, and the reset would not be tested against a stuck read). */
    for (int tick = 0; tick < 2; tick++) {
        uint8_t s0 = rtc_seconds();
        for (uint32_t n = 50000000; n && rtc_seconds() == s0; n--)
            if (*(volatile uint16_t *)&vq.used_idx != 0)
                return fail(VBLK_EXIT_HUNG_COMPLETED, "the read on the hung backing store completed");
    }
    puts("virtio-blk reset-hung read-pending\n");

    w8(common_cfg + CC_STATUS, 0);  /* returns once the device has given up on the read */
    if (r8(common_cfg + CC_STATUS) != 0) return fail(VBLK_EXIT_RESET_STUCK, "device_status not 0 after the reset");
    if (*(volatile uint16_t *)&vq.used_idx != 0 || *(volatile uint8_t *)&req_status != 0xee)
        return fail(VBLK_EXIT_OLD_RING_TOUCHED, "the reset put the pending read on the used ring");
    zero_vq();
    uint8_t st = 0;
    if ((r = init_device_with(&ro, 0, 0, &(struct queue_setup){QSIZE, (uint64_t)(uintptr_t)vq.desc,
                                                               (uint64_t)(uintptr_t)&vq.avail_flags,
                                                               (uint64_t)(uintptr_t)&vq.used_flags}, 1, &st)))
        return r;
    if (!(st & ST_NEEDS_RESET))
        return fail(VBLK_EXIT_HUNG_REACTIVATED, "re-activation accepted while the old read is in host I/O");
    puts("virtio-blk reset-hung reset-done status=0 reactivation-refused status=");
    puthex(st, 2);
    puts("\n");

    unsigned attempt = 0;
    for (;;) {
        if (++attempt > HUNG_ATTEMPTS) return fail(VBLK_EXIT_NOT_REACTIVATED, "activation still refused");
        wait_rtc_tick();
        w8(common_cfg + CC_STATUS, 0);
        if (r8(common_cfg + CC_STATUS) != 0) return fail(VBLK_EXIT_RESET_STUCK, "device_status not 0 after a reset");
        /* The device dropped the old read's completion when it found it done (in this reset or
         * an activation): the old status byte was never written, and vq was zeroed since. */
        if (*(volatile uint16_t *)&vq.used_idx != 0 || *(volatile uint8_t *)&req_status != 0xee)
            return fail(VBLK_EXIT_OLD_RING_TOUCHED, "the old read's completion reached the ring");
        zero_vq();
        if ((r = init_device_with(&ro, 0, 0, &(struct queue_setup){QSIZE, (uint64_t)(uintptr_t)vq.desc,
                                                                   (uint64_t)(uintptr_t)&vq.avail_flags,
                                                                   (uint64_t)(uintptr_t)&vq.used_flags}, 1, &st)))
            return r;
        if (!(st & ST_NEEDS_RESET)) break;
    }
    puts("virtio-blk reset-hung reactivated attempts=");
    putdec(attempt);
    puts("\n");
    clear_data();
    TRY_STATUS(read_sectors(0, NSECT), S_OK, VBLK_EXIT_READ_STATUS, "read of sectors 0..15 after re-activation");
    if (!check(0, NSECT, HOST_MAGIC, 0, 0)) return fail(VBLK_EXIT_READ_DATA, "sectors 0..15 differ from the host pattern");
    w8(common_cfg + CC_STATUS, 0);
    puts("virtio-blk reset-hung ok\n");
    return 0;
}

int vblk_main(uint32_t start_info);
int vblk_main(uint32_t start_info) {
    if (*(volatile uint32_t *)(uintptr_t)start_info != HVM_START_MAGIC)
        return fail(EXIT_BAD_START_INFO, "EBX is not an hvm_start_info");
    int expect_ro = cmdline_has(start_info, "vblk=ro");

    unsigned dev = 0;
    int r;
    if ((r = find_device(&dev))) return r;
    cfg_write16(dev, PCI_COMMAND, (uint16_t)(cfg_read16(dev, PCI_COMMAND) | CMD_MEMORY | CMD_BUS_MASTER));
    puts("virtio-blk pci 00:");
    puthex(dev, 2);
    puts(".0 command=");
    puthex(cfg_read16(dev, PCI_COMMAND), 4);
    puts("\n");
    if ((r = find_structures(dev))) return r;
    if (cmdline_has(start_info, "vblk=flood")) return flood();
    if (cmdline_has(start_info, "vblk=reset-hung")) return reset_hung();
    int ro;
    if ((r = init_device(&ro))) return r;
    if (ro != expect_ro) return fail(VBLK_EXIT_RO_MISMATCH, ro ? "VIRTIO_BLK_F_RO offered, vblk=ro not given"
                                                               : "vblk=ro given, VIRTIO_BLK_F_RO not offered");
    uint64_t capacity = read_capacity();
    if (capacity < NSECT) return fail(VBLK_EXIT_CAPACITY, "capacity below 16 sectors");

    /* Two data descriptors: the device must scatter one request across them. */
    struct seg halves[2] = {{data, NSECT * SECTOR / 2, DESC_F_WRITE},
                            {data + NSECT * SECTOR / 16, NSECT * SECTOR / 2, DESC_F_WRITE}};
    TRY_STATUS(request(T_IN, 0, halves, 2, NSECT * SECTOR + 1), S_OK, VBLK_EXIT_READ_STATUS, "read of sectors 0..15");
    if (!check(0, NSECT, HOST_MAGIC, 0, 0)) return fail(VBLK_EXIT_READ_DATA, "sectors 0..15 differ from the host pattern");
    /* MSI-X is disabled, so the device reports the used buffer in ISR bit 0 (§4.1.4.5.1); the
     * bit may trail the used ring by a moment. Reading it clears it. */
    uint8_t isr = 0;
    for (int n = 1000; n && !(isr & 1); n--) isr = r8(isr_cfg);
    uint8_t isr_after = r8(isr_cfg);
    puts("virtio-blk read-ok capacity=");
    putdec(capacity);
    puts("\n");
    puts("virtio-blk isr=");
    puthex(isr, 2);
    puts(" then ");
    puthex(isr_after, 2);
    puts("\n");
    if (!(isr & 1) || isr_after != 0) return fail(VBLK_EXIT_ISR, "ISR bit 0 not set after a used buffer, or not cleared by the read");

    fill(GUEST_MAGIC, WR_FIRST, WR_COUNT);
    struct seg wseg = {data, WR_COUNT * SECTOR, 0};
    if (!ro) {
        TRY_STATUS(request(T_OUT, WR_FIRST, &wseg, 1, 1), S_OK, VBLK_EXIT_WRITE_STATUS, "write of sectors 4..7");
        TRY_STATUS(request(T_FLUSH, 0, 0, 0, 1), S_OK, VBLK_EXIT_FLUSH_STATUS, "flush");
        clear_data();
        TRY_STATUS(read_sectors(RB_FIRST, RB_COUNT), S_OK, VBLK_EXIT_READ_STATUS, "read of sectors 2..9");
        if (!check(RB_FIRST, RB_COUNT, GUEST_MAGIC, WR_FIRST, WR_COUNT))
            return fail(VBLK_EXIT_READBACK, "sectors 2..9 read back wrong");
        puts("virtio-blk write-flush-readback-ok sectors=4..7\n");
    } else {
        /* §5.2.6.2: the device answers a write to a VIRTIO_BLK_F_RO disk with IOERR and writes
         * nothing. A driver would not send it; this one does to hold the device to that. */
        TRY_STATUS(request(T_OUT, WR_FIRST, &wseg, 1, 1), S_IOERR, VBLK_EXIT_RO_WRITE_ACCEPTED,
                   "write to the read-only disk was not refused with IOERR");
        TRY_STATUS(request(T_FLUSH, 0, 0, 0, 1), S_OK, VBLK_EXIT_FLUSH_STATUS, "flush");
        clear_data();
        TRY_STATUS(read_sectors(RB_FIRST, RB_COUNT), S_OK, VBLK_EXIT_READ_STATUS, "read of sectors 2..9");
        if (!check(RB_FIRST, RB_COUNT, HOST_MAGIC, 0, 0))
            return fail(VBLK_EXIT_RO_DATA_CHANGED, "read-only disk changed after the refused write");
        puts("virtio-blk ro write-refused status=1 data-unchanged\n");
    }

    for (unsigned i = 0; i < ID_BYTES; i++) id_buf[i] = 0xaa;
    struct seg idseg = {id_buf, ID_BYTES, DESC_F_WRITE};
    TRY_STATUS(request(T_GET_ID, 0, &idseg, 1, ID_BYTES + 1), S_OK, VBLK_EXIT_GET_ID_STATUS, "GET_ID");
    /* §5.2.6: up to 20 bytes, NUL-padded when shorter. */
    static const char serial[ID_BYTES] = SERIAL;
    for (unsigned i = 0; i < ID_BYTES; i++)
        if (id_buf[i] != (uint8_t)serial[i]) return fail(VBLK_EXIT_GET_ID_DATA, "GET_ID is not \"" SERIAL "\"");
    puts("virtio-blk get-id=" SERIAL "\n");

    TRY_STATUS(read_sectors(capacity, 1), S_IOERR, VBLK_EXIT_BEYOND_CAPACITY, "read at capacity");
    TRY_STATUS(read_sectors(capacity - 1, 2), S_IOERR, VBLK_EXIT_BEYOND_CAPACITY, "read across capacity");
    puts("virtio-blk beyond-capacity status=1\n");

    /* §2.4: reset at the end too, so the device's reset path runs with a live queue. */
    w8(common_cfg + CC_STATUS, 0);
    if (r8(common_cfg + CC_STATUS) != 0) return fail(VBLK_EXIT_RESET_STUCK, "device_status not 0 after the final reset");
    puts("virtio-blk requests=");
    putdec(used_shadow);
    puts(" empty-polls=");
    putdec(polls);
    puts("\nvirtio-blk ok\n");
    if (cmdline_has(start_info, "vblk=hold")) {
        /* Successful data transfers only: the reads of 0..15 and 2..9, the write of 4..7 on a
         * read-write disk (GET_ID and the refused requests move no disk data). */
        puts("virtio-blk hold read-bytes=");
        putdec((NSECT + RB_COUNT) * SECTOR);
        puts(" write-bytes=");
        putdec(ro ? 0 : WR_COUNT * SECTOR);
        puts("\n");
        for (;;) __asm__ volatile("cli; hlt");
    }
    return 0;
}
