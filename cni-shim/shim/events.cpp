#include "cni-shim/shim/events.hpp"

#include <time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "cni-shim/proto/events_service.pb.h"
#include "cni-shim/proto/typeurl.hpp"
#include "cni-shim/ttrpc/client.hpp"

namespace kestrel::shim {

std::int64_t realtime_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string forward_request_bytes(std::string_view ns, std::string_view topic_name, const google::protobuf::Message& event,
                                  std::int64_t unix_ns) {
    containerd::services::events::ttrpc::v1::ForwardRequest req;
    auto* env = req.mutable_envelope();
    env->mutable_timestamp()->set_seconds(unix_ns / 1'000'000'000);
    env->mutable_timestamp()->set_nanos(static_cast<std::int32_t>(unix_ns % 1'000'000'000));
    env->set_namespace_(std::string(ns));
    env->set_topic(std::string(topic_name));
    shim_proto::pack_containerd_any(event, env->mutable_event());
    return req.SerializeAsString();
}

EventPublisher::EventPublisher(std::string ttrpc_address, std::string ns)
    : address_(std::move(ttrpc_address)), ns_(std::move(ns)), thread_([this] { run(); }) {}

EventPublisher::~EventPublisher() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

void EventPublisher::publish(std::string_view topic_name, const google::protobuf::Message& event) {
    std::string bytes = forward_request_bytes(ns_, topic_name, event, realtime_ns());
    spdlog::info("event {} {}", topic_name, event.ShortDebugString());
    {
        std::lock_guard lk(mu_);
        if (queue_.size() >= 4096) {
            spdlog::warn("event queue full: {} dropped", topic_name);
            return;
        }
        queue_.push_back(std::move(bytes));
    }
    cv_.notify_all();
}

void EventPublisher::run() {
    for (;;) {
        std::string item;
        {
            std::unique_lock lk(mu_);
            cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;
            item = std::move(queue_.front());
            queue_.pop_front();
            sending_ = true;
        }
        for (int attempt = 0; attempt < 5 && !address_.empty(); ++attempt) {
            auto r = ttrpc::call_once(address_, "containerd.services.events.ttrpc.v1.Events", "Forward", item,
                                      ttrpc::CallOptions{ns_, std::chrono::seconds(5)});
            if (r) break;
            spdlog::warn("Events/Forward to {}: {} (attempt {})", address_, r.error().message, attempt + 1);
            ::usleep(200'000);
        }
        std::lock_guard lk(mu_);
        sending_ = false;
        cv_.notify_all();
    }
}

void EventPublisher::drain(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, timeout, [&] { return queue_.empty() && !sending_; });
}

}  // namespace kestrel::shim
