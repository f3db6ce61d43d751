#include "migration/virtio_state.hpp"

#include <doctest/doctest.h>

using namespace kestrel;
using namespace kestrel::migration;

namespace {

VirtioPciDevice::State busy_state() {
    VirtioPciDevice::State s;
    s.device_type = 2;
    s.config.assign(PciConfigSpace::kSize, 0);
    for (size_t i = 0; i < s.config.size(); ++i) s.config[i] = static_cast<uint8_t>(i * 7);
    for (uint32_t v = 0; v < 3; ++v) s.msix.vectors.push_back({0xfee0'0000 + v * 4, v, 0x40 + v, v & 1});
    s.msix.pending = {0x5};
    s.device_feature_select = 1;
    s.driver_feature_select = 1;
    s.driver_features = 0x1'3000'0001;
    s.config_msix_vector = 0;
    s.status = 0x0f;
    s.config_generation = 3;
    s.isr = 1;
    s.activated = true;
    s.queue_select = 1;
    s.queues.push_back({256, 1, true, 0x1000, 0x2000, 0x3000, QueuePosition{65535, 65500, true}});
    s.queues.push_back({128, 0xffff, false, 0, 0, 0, std::nullopt});
    return s;
}

Section section_of(const Encoder& e, uint32_t version = kVirtioStateVersion) {
    return Section{virtio_section(0), version, e.bytes()};
}

}  // namespace

TEST_CASE("virtio state: every field survives encode and decode") {
    const auto s = busy_state();
    Encoder e;
    encode(e, s);
    auto back = decode_virtio(section_of(e));
    REQUIRE(back);
    CHECK(*back == s);
    CHECK(virtio_section(3) == "virtio/3");
}

TEST_CASE("virtio state: short, long, other-version and over-bound payloads are refused by field") {
    Encoder e;
    encode(e, busy_state());
    auto refused = [](const Section& sec) {
        auto r = decode_virtio(sec);
        REQUIRE_FALSE(r);
        CHECK(r.error().kind == ErrorKind::BadRequest);
        return r.error().message;
    };
    auto bytes = e.bytes();
    for (size_t cut : {size_t{1}, size_t{100}, bytes.size() - 1}) {
        Section s = section_of(e);
        s.payload.resize(bytes.size() - cut);
        CHECK(refused(s).find("virtio/0") != std::string::npos);
    }
    Section longer = section_of(e);
    longer.payload.push_back(0);
    CHECK(refused(longer).find("virtio/0") != std::string::npos);
    CHECK(refused(section_of(e, 2)).find("version 2") != std::string::npos);

    // The MSI-X vector count right after device_type and config: beyond 2048 is refused
    // before anything is sized by it.
    Section many = section_of(e);
    const size_t at = 2 + PciConfigSpace::kSize;
    many.payload[at] = 0x01;
    many.payload[at + 1] = 0x08;  // 2049
    CHECK(refused(many).find("msix.vectors") != std::string::npos);
    Section bad_bool = section_of(e);
    // activated: after msix (4 + 3*16 + 4 + 8) and the register block (4+4+8+2+1+1+1).
    const size_t activated_at = at + 4 + 3 * 16 + 4 + 8 + 4 + 4 + 8 + 2 + 1 + 1 + 1;
    REQUIRE(bad_bool.payload[activated_at] == 1);
    bad_bool.payload[activated_at] = 2;
    CHECK(refused(bad_bool).find("activated") != std::string::npos);
}
