/* Constants shared by the virtio_blk guest's entry stub (virtio_blk_entry.S) and its C driver
 * (virtio_blk.c): plain #defines only, so both the assembler and the C compiler can read it.
 * The failure codes are listed, with their meaning, in tests/kvm/run-kvm-tests GUEST_CODES;
 * they sit clear of kestrel's own exit codes (0..5) and the other guests' (guest.h). */
#pragma once

#define VBLK_EXIT_NO_DEVICE        20  /* no 1af4:1042 function on PCI bus 0 */
#define VBLK_EXIT_BAD_BAR          21  /* BAR of a virtio capability not a memory BAR in 0xc0000000..0xdfffffff */
#define VBLK_EXIT_MISSING_CAP      22  /* common/notify/ISR/device cfg capability missing or malformed */
#define VBLK_EXIT_RESET_STUCK      23  /* device_status does not read 0 after the reset write */
#define VBLK_EXIT_NO_VERSION_1     24  /* VIRTIO_F_VERSION_1 or VIRTIO_BLK_F_FLUSH not offered */
#define VBLK_EXIT_FEATURES_REFUSED 25  /* FEATURES_OK did not stay set */
#define VBLK_EXIT_QUEUE_SETUP      26  /* queue 0 unavailable, too small, or its registers did not take */
#define VBLK_EXIT_DEVICE_STATUS    27  /* DEVICE_NEEDS_RESET/FAILED set, or DRIVER_OK missing, after DRIVER_OK */
#define VBLK_EXIT_TIMEOUT          28  /* no used-ring entry within the poll bound */
#define VBLK_EXIT_BAD_USED         29  /* used element with a wrong id or len */
#define VBLK_EXIT_READ_STATUS      30  /* a read of the host-written sectors did not complete OK */
#define VBLK_EXIT_READ_DATA        31  /* sectors read differ from the host's pattern */
#define VBLK_EXIT_CAPACITY         32  /* capacity smaller than the sectors the test uses */
#define VBLK_EXIT_WRITE_STATUS     33  /* a write to the read-write disk did not complete OK */
#define VBLK_EXIT_FLUSH_STATUS     34  /* FLUSH did not complete OK */
#define VBLK_EXIT_READBACK         35  /* written sectors read back wrong (or neighbours changed) */
#define VBLK_EXIT_GET_ID_STATUS    36  /* GET_ID did not complete OK */
#define VBLK_EXIT_GET_ID_DATA      37  /* GET_ID answer is not the expected serial */
#define VBLK_EXIT_BEYOND_CAPACITY  38  /* a read past capacity did not return VIRTIO_BLK_S_IOERR */
#define VBLK_EXIT_RO_WRITE_ACCEPTED 39 /* read-only disk: a write did not return VIRTIO_BLK_S_IOERR */
#define VBLK_EXIT_RO_DATA_CHANGED  40  /* read-only disk: sectors changed after the refused write */
#define VBLK_EXIT_RO_MISMATCH      41  /* VIRTIO_BLK_F_RO offered != what the cmdline says to expect */
#define VBLK_EXIT_ISR              42  /* ISR bit 0 not set after a used buffer (MSI-X off), or not read-to-clear */
/* vblk=flood */
#define VBLK_EXIT_FLOOD_SETUP      43  /* INDIRECT_DESC not offered, config too short, or disk too small */
#define VBLK_EXIT_FLOOD_STATUS     44  /* a flood request came back with a wrong id/len/status, twice, or not at all */
#define VBLK_EXIT_FLOOD_DATA       45  /* flood read-back data wrong, or bytes around the shared buffer changed */
/* vblk=reset-hung */
#define VBLK_EXIT_HUNG_COMPLETED   46  /* the read on the hung backing store completed before the reset */
#define VBLK_EXIT_HUNG_REACTIVATED 47  /* re-activation accepted while the old read was still in host I/O */
#define VBLK_EXIT_OLD_RING_TOUCHED 48  /* the old used ring or status byte changed after the reset */
#define VBLK_EXIT_NOT_REACTIVATED  49  /* activation still refused after the backing store answered */
