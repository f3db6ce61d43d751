// The pod sandbox ("pause") process of the CRI case's local sandbox image: holds the pod's
// namespaces while the pod lives, reaps children re-parented to it, and exits 0 on SIGTERM
// or SIGINT (what the CRI plugin sends at StopPodSandbox). Linked statically: the image has
// nothing but this file.
#include <cerrno>
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

namespace {
volatile sig_atomic_t stop = 0;
void on_stop(int) { stop = 1; }
void on_child(int) {
    // SIGCHLD is not queued: one signal may stand for several exited children.
    const int saved = errno;
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {}
    errno = saved;
}
}  // namespace

int main() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    ::sigaction(SIGCHLD, &sa, nullptr);
    // SIGTERM/SIGINT blocked except inside sigsuspend: one arriving between the check and
    // the wait cannot be lost (pause() there would sleep through it until the SIGKILL).
    sigset_t stops, waiting;
    ::sigemptyset(&stops);
    ::sigaddset(&stops, SIGTERM);
    ::sigaddset(&stops, SIGINT);
    ::sigprocmask(SIG_BLOCK, &stops, &waiting);
    ::sigdelset(&waiting, SIGTERM);
    ::sigdelset(&waiting, SIGINT);
    while (!stop) ::sigsuspend(&waiting);
    return 0;
}
