// SerialSink: writes what the guest's UART transmitted (a SerialTxBuffer) to where --serial
// points, so that nothing on the host side — a reader that stops reading, a full disk, a FIFO
// nobody drains — can hold a vCPU or keep SIGTERM from ending kestrel.
//
// Two ways to drain, chosen by what the output is:
//  - Poll (pipes, FIFOs, terminals, sockets, character devices that poll): non-blocking
//    writes on the event loop, resumed on EPOLLOUT. The description is kestrel's own
//    (opened by us, or stdout reopened through /proc/self/fd) so O_NONBLOCK never reaches the
//    parent's terminal or pipe; a socket is written with MSG_DONTWAIT instead.
//  - Thread (regular files, block devices, /dev/full and other devices that cannot be polled,
//    and stdout when no private description can be had): O_NONBLOCK means nothing there and a
//    write(2) may block (NFS, FUSE, dirty-page throttling), so one writer thread does those
//    writes instead of the event loop, which must stay free to handle SIGTERM. Shutdown never
//    joins a writer stuck in write(2); it is left to process exit.
// Either way finish() bounds the end: it writes what can go out within a short grace, then
// drops and counts the rest. A reader that is gone (EPIPE) is a counted drop, never SIGPIPE.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "devices/event_registry.hpp"
#include "devices/legacy/serial_tx_buffer.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel {

// The opened serial output, before the event loop exists (run_vm opens every host resource
// first so a bad path is reported before anything is built).
struct SerialOutput {
    enum class Method {
        kWrite,     // write(2) on a non-blocking description of our own
        kSend,      // send(2) with MSG_DONTWAIT | MSG_NOSIGNAL (a socket's description is shared)
        kBlocking,  // write(2) that may block: writer thread
    };
    UniqueFd fd;  // invalid: the output is discarded (--serial none)
    Method method = Method::kBlocking;
    std::string name;  // for messages: "stdout" or the path
};

// --serial stdio: a private non-blocking description of `fd` when it is a pipe, FIFO or
// character device (terminal), the socket itself, else (a regular file: reopening would give
// it a second file offset) a duplicate written by the writer thread. Never changes the
// flags of the inherited description.
Result<SerialOutput> open_serial_stdout(int fd);
// --serial file:PATH: appended to and created if missing, never truncated. A FIFO must
// already have a reader (ENXIO otherwise, reported as such): waiting for one would hang
// kestrel before the guest starts with nothing said.
Result<SerialOutput> open_serial_file(const std::string& path);

class SerialSink {
public:
    // How long finish() keeps writing for a reader that is still taking bytes: enough for a
    // live terminal or pipe to take the last output, and well inside the 1 s a supervisor's
    // SIGTERM may take to end kestrel.
    static constexpr std::chrono::milliseconds kExitGrace{200};

    // Watches the output on `loop` (or starts the writer thread). `capacity` is the buffer's.
    static Result<std::unique_ptr<SerialSink>> start(EventRegistry& loop, SerialOutput out,
                                                     size_t capacity = SerialTxBuffer::kDefaultCapacity);
    SerialSink(const SerialSink&) = delete;
    SerialSink& operator=(const SerialSink&) = delete;
    ~SerialSink();

    // What the UART transmits into; nullptr when the output is discarded.
    std::shared_ptr<SerialTxBuffer> buffer() const;
    // Once the vCPUs have stopped (nothing transmits any more): writes what can go out within
    // `grace` without blocking kestrel, drops and counts the rest, logs the total (info).
    // Idempotent; the destructor calls it.
    void finish(std::chrono::milliseconds grace = kExitGrace);
    // Bytes lost so far (no room, write errors, left at finish()).
    uint64_t dropped() const;
    // Bytes written to the output so far.
    uint64_t written() const;
    // Which way it drains (for tests).
    bool drained_by_thread() const;

    struct State;

private:
    SerialSink(EventRegistry& loop, std::shared_ptr<State> state) : loop_(loop), state_(std::move(state)) {}
    EventRegistry& loop_;
    std::shared_ptr<State> state_;
    bool finished_ = false;
};

}  // namespace kestrel
