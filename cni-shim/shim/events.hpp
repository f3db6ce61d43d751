// Task events to containerd: `containerd.services.events.ttrpc.v1.Events/Forward` on the
// TTRPC_ADDRESS containerd gives the shim (runtime v2 README "Events"), each in a full
// Envelope {timestamp, namespace, topic, event} — containerd 1.6 dereferences every field and
// crashes on an empty one — with the event packed as containerd 1.6's typeurl resolves it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <google/protobuf/message.h>

namespace kestrel::shim {

// runtime/events.go topics.
namespace topic {
inline constexpr std::string_view kCreate = "/tasks/create";
inline constexpr std::string_view kStart = "/tasks/start";
inline constexpr std::string_view kExit = "/tasks/exit";
inline constexpr std::string_view kDelete = "/tasks/delete";
inline constexpr std::string_view kExecAdded = "/tasks/exec-added";
inline constexpr std::string_view kExecStarted = "/tasks/exec-started";
inline constexpr std::string_view kPaused = "/tasks/paused";
inline constexpr std::string_view kResumed = "/tasks/resumed";
}  // namespace topic

// The serialized ForwardRequest for one event; `unix_ns` is the envelope's timestamp.
std::string forward_request_bytes(std::string_view ns, std::string_view topic, const google::protobuf::Message& event,
                                  std::int64_t unix_ns);

std::int64_t realtime_ns();

// Sends events in order from one thread, so publishing never blocks a Task call. A failed
// Forward is retried a few times, then dropped with a log line (containerd may be
// restarting; it re-reads task state through State/Wait).
class EventPublisher {
public:
    EventPublisher(std::string ttrpc_address, std::string ns);
    ~EventPublisher();  // sends what is queued (bounded by the per-call timeout), then stops
    void publish(std::string_view topic, const google::protobuf::Message& event);
    // Waits until everything published so far was sent (or dropped), at most `timeout`:
    // before the shim exits, so containerd hears of the last exits and deletes.
    void drain(std::chrono::milliseconds timeout);

private:
    void run();
    std::string address_, ns_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::string> queue_;
    bool stopping_ = false;
    bool sending_ = false;
    std::thread thread_;
};

}  // namespace kestrel::shim
