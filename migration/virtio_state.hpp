// The virtio PCI functions' state in the state stream (migration/state_stream.hpp): one section
// per function, "virtio/N" with N its place among the VM's virtio functions (PCI slot order,
// which the configuration fixes), its payload VirtioPciDevice::State field by field. The
// transport checks what the state means against the function it is restored into
// (VirtioPciDevice::restore); this file owns the bytes and refuses a short, long or
// other-version payload, and counts beyond the transport's bounds, before anything is sized.
//
// Payload version 1 (integers little-endian, bools one byte 0/1):
//   device_type u16, config 4096 bytes,
//   msix: u32 vectors (<= 2048) x {address_lo, address_hi, data, control: u32},
//         u32 pba words (<= 32) x u64,
//   device_feature_select u32, driver_feature_select u32, driver_features u64,
//   config_msix_vector u16, status u8, config_generation u8, isr u8, activated bool,
//   queue_select u16,
//   u32 queues (<= 1024) x {size u16, msix_vector u16, enabled bool, desc u64, driver u64,
//         device u64, has_position bool, [next_avail u16, signalled_used u16,
//         signalled_used_valid bool]}
#pragma once

#include <string>

#include "devices/virtio/virtio_pci.hpp"
#include "migration/state_stream.hpp"

namespace kestrel::migration {

inline constexpr uint32_t kVirtioStateVersion = 1;
std::string virtio_section(uint32_t index);  // "virtio/N"

void encode(Encoder& e, const VirtioPciDevice::State& s);
Result<VirtioPciDevice::State> decode_virtio(const Section& s);

}  // namespace kestrel::migration
