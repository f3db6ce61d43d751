// A process's stdio between containerd's FIFOs and the agent's attached streams: containerd
// (or ctr) creates the FIFOs and holds their far ends open before Create/Exec (runtime v2:
// the shim only opens them); the agent gives one raw byte stream per requested stream.
// Output is copied to its FIFO until the agent's EOF; stdin from its FIFO until the FIFO's
// EOF or CloseIO, then the stream is closed, which the agent turns into EOF for the process.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::shim {

struct StdioPaths {
    std::string in, out, err;
    bool terminal = false;
};

// Refuses anything but an absolute path to an existing FIFO ("" = stream not wanted): the
// paths come from containerd's requests and must not let a request write to any file.
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
    // agent can finish the stream and send the exit event.
    void add_output(UniqueFd from, UniqueFd to);
    // Copies the FIFO `from` to the agent's stdin stream `to` until EOF or close_stdin().
    Result<void> add_stdin(UniqueFd from, UniqueFd to);

    // Waits until every output stream reached its EOF (all bytes handed to the FIFOs).
    void wait_output();
    void close_stdin();

private:
    std::mutex mu_;
    std::vector<std::thread> outputs_;
    std::thread stdin_;
    UniqueFd stdin_stop_;  // eventfd
};

}  // namespace kestrel::shim
