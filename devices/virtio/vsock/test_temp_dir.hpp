// Test support: a private temporary directory (short path, so "<dir>/v.sock_<port>" fits in
// sockaddr_un), removed with everything in it when the test ends.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace kestrel::test {

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/kvsock.XXXXXX";
        if (!::mkdtemp(tmpl)) std::abort();
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        if (DIR* d = ::opendir(path_.c_str())) {
            while (dirent* e = ::readdir(d)) {
                std::string n = e->d_name;
                if (n != "." && n != "..") ::unlink((path_ + "/" + n).c_str());
            }
            ::closedir(d);
        }
        ::rmdir(path_.c_str());
    }
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

}  // namespace kestrel::test
