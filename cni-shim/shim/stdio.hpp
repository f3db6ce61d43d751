// A process's stdio between containerd's FIFOs and the agent's attached streams: containerd
// (or ctr) creates the FIFOs and holds their far ends open before Create/Exec (runtime v2:
// the shim only opens them); the agent gives one raw byte stream per requested stream.
// Output is copied to its FIFO until the agent's EOF; stdin from its FIFO until the FIFO's
// EOF or CloseIO, then the stream is closed, which the agent turns into EOF for the process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::shim {

struct StdioPaths {
    std::string in, out, err;
    bool terminal = false;
};

// Where a process's stdout/stderr go, as containerd names it (runtime v2; the runc shim's
// pkg/process/io.go, which `ctr run --log-uri` and other clients rely on):
//   /path or fifo:///path  a FIFO containerd made;
//   file:///path           a file, appended to (created 0644 with its directory); stdout and
//                          stderr may name the same one;
//   binary:///path?k=v&k2  a logging program the shim starts with the process's stdout on fd
//                          3, its stderr on fd 4 and a pipe on fd 5 it closes (or writes to)
//                          when ready; arguments k v k2, environment CONTAINER_ID and
//                          CONTAINER_NAMESPACE.
// Paths are absolute, percent-decoded, without NUL or "..". stdin is always a FIFO.
struct OutputUri {
    enum class Kind { Fifo, File, Binary } kind = Kind::Fifo;
    std::string path;
    std::vector<std::string> args;  // Binary: the query's keys and values, in order
};
Result<OutputUri> parse_output_uri(const std::string& uri, const char* which);

// Refuses what is not a FIFO path (stdin) or an OutputUri (stdout/stderr; a FIFO must
// exist), "" = stream not wanted: the paths come from containerd's requests.
Result<void> check_stdio_paths(const StdioPaths& p);

// Opens the write end of a FIFO whose reader containerd holds; waits up to `timeout` for a
// reader (ENXIO until then). The fd is blocking.
Result<UniqueFd> open_fifo_writer(const std::string& path, std::chrono::milliseconds timeout);
// Opens the read end without waiting for a writer (O_NONBLOCK; see StdinPump).
Result<UniqueFd> open_fifo_reader(const std::string& path);

class ProcessIo {
public:
    ProcessIo() = default;
    ProcessIo(const ProcessIo&) = delete;
    ProcessIo& operator=(const ProcessIo&) = delete;
    ~ProcessIo();

    // Copies `from` (the agent's stdout/stderr stream) to `to` (a FIFO) until EOF. A reader
    // that goes away (EPIPE) does not stop the copy: the rest is read and dropped, so the
    // agent can finish the stream and send the exit event. The sinks of one process are
    // closed together, after the last copy's EOF, once their readers have taken what the
    // FIFOs hold (see release_sinks in stdio.cpp: containerd's CRI loses an attached
    // stream's last output when another stream of the process ends first).
    void add_output(UniqueFd from, UniqueFd to);
    // Copies the FIFO `from` to the agent's stdin stream `to` until EOF or close_stdin().
    Result<void> add_stdin(UniqueFd from, UniqueFd to);

    // Starts a binary:// logging program (see OutputUri) and waits up to 10 s for it to be
    // ready; returns the write ends of its stdout and stderr pipes. ProcessIo's destructor
    // ends it: its pipes closed, 2 s to end by itself, then as containerd's shims do,
    // SIGTERM, and SIGKILL after 12 s.
    Result<std::pair<UniqueFd, UniqueFd>> start_logger(const OutputUri& uri, const std::string& container,
                                                       const std::string& ns);

    // Waits until every output stream reached its EOF (all bytes handed to the FIFOs) and
    // the sinks are closed.
    void wait_output();
    void close_stdin();

    struct Sink {
        UniqueFd fd;
        bool fifo = false;  // a FIFO or pipe whose reader is still there (no EPIPE seen)
        std::chrono::steady_clock::time_point last_write{};
    };

private:
    void output_ended(Sink s);

    std::mutex mu_;
    std::vector<std::thread> outputs_;
    std::size_t copying_ = 0;  // output copies not at their EOF yet
    std::vector<Sink> ended_;  // the sinks of those that are, held open until copying_ is 0
    std::thread stdin_;
    UniqueFd stdin_stop_;  // eventfd
    pid_t logger_ = -1;
};

}  // namespace kestrel::shim
