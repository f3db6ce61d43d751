#include "cni-shim/shim/rootfs.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

using namespace kestrel::shim;

TEST_CASE("parse_mount_options splits flags from filesystem data") {
    auto a = parse_mount_options({"ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "workdir=/w"});
    REQUIRE(a);
    CHECK(a->flags == (MS_RDONLY | MS_NOSUID));
    CHECK(a->data == "lowerdir=/a:/b,upperdir=/u,workdir=/w");
    a = parse_mount_options({"rbind", "ro", "rw"});
    REQUIRE(a);
    CHECK(a->flags == (MS_BIND | MS_REC));
    CHECK_FALSE(parse_mount_options({"lowerdir=/a,upperdir=/etc"}));  // smuggled option
    CHECK_FALSE(parse_mount_options({""}));
}

TEST_CASE("mount_rootfs refuses types it does not know before mounting anything") {
    auto r = mount_rootfs({{"nfs", "server:/x", "", {}}}, "/nonexistent-kestrel-dir");
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("'nfs' is not supported") != std::string::npos);
}

TEST_CASE("ext4 images: sized from the tree, populated by mke2fs -d") {
    char t[] = "/tmp/kestrel-rootfs-XXXXXX";
    std::filesystem::path d = ::mkdtemp(t);
    std::filesystem::create_directories(d / "tree/bin");
    std::ofstream(d / "tree/bin/hello") << std::string(100000, 'h');
    std::filesystem::create_symlink("hello", d / "tree/bin/link");
    auto sz = measure_tree((d / "tree").string());
    REQUIRE(sz);
    CHECK(sz->inodes == 4);  // root, bin, hello, link
    CHECK(sz->bytes == 100000 + 5);
    auto bytes = ext4_image_bytes(*sz);
    CHECK(bytes % (1 << 20) == 0);
    CHECK(bytes >= 16u << 20);
    CHECK(ext4_image_bytes({1u << 30, 10}) > (1u << 30));

    std::string img = (d / "root.ext4").string();
    auto built = build_ext4_image((d / "tree").string(), img);
    REQUIRE_MESSAGE(built, built.error().what());
    CHECK(std::filesystem::file_size(img) == bytes);
    // The image holds the file: read it back with debugfs (e2fsprogs, like mke2fs).
    auto cat = run_command({"debugfs", "-R", "stat /bin/hello", img});
    REQUIRE_MESSAGE(cat, cat.error().what());
    CHECK(cat->find("Size: 100000") != std::string::npos);
    auto fsck = run_command({"e2fsck", "-fn", img});
    CHECK_MESSAGE(fsck.has_value(), (fsck ? std::string() : fsck.error().what()));

    CHECK_FALSE(build_ext4_image((d / "missing").string(), (d / "x.ext4").string()));
    std::filesystem::remove_all(d);
}

TEST_CASE("run_command reports a failing command with its output") {
    auto r = run_command({"sh", "-c", "echo oops >&2; exit 3"});
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("oops") != std::string::npos);
    auto ok = run_command({"sh", "-c", "echo fine"});
    REQUIRE(ok);
    CHECK(*ok == "fine\n");
}

TEST_CASE("cacheable_rootfs: a fresh overlay of image layers is keyed by its lowerdir list") {
    char t[] = "/tmp/kestrel-cache-XXXXXX";
    std::filesystem::path d = ::mkdtemp(t);
    std::filesystem::create_directories(d / "up1");
    std::filesystem::create_directories(d / "up2");
    std::filesystem::create_directories(d / "full");
    std::ofstream(d / "full/file") << "x";
    auto ov = [&](const std::string& lower, const std::string& upper) {
        return std::vector<RootfsMount>{{"overlay", "overlay", "", {"index=off", "workdir=/w", "upperdir=" + upper, "lowerdir=" + lower}}};
    };
    for (const char* l : {"s/1/fs", "s/2/fs", "s/3/fs"}) std::filesystem::create_directories(d / l);
    std::string s1 = (d / "s/1/fs").string(), s2 = (d / "s/2/fs").string(), s3 = (d / "s/3/fs").string();
    auto a = cacheable_rootfs(ov(s2 + ":" + s1, (d / "up1").string()));
    auto b = cacheable_rootfs(ov(s2 + ":" + s1, (d / "up2").string()));
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->key == b->key);  // two containers of one image
    CHECK(a->key.size() == 16);
    REQUIRE(a->lowers_only.size() == 1);
    CHECK(a->lowers_only[0].type == "overlay");
    CHECK(a->lowers_only[0].options == std::vector<std::string>{"ro", "lowerdir=" + s2 + ":" + s1});
    auto other = cacheable_rootfs(ov(s3 + ":" + s1, (d / "up1").string()));
    REQUIRE(other);
    CHECK(other->key != a->key);
    auto one = cacheable_rootfs(ov(s1, (d / "up1").string()));
    REQUIRE(one);
    CHECK(one->lowers_only[0].type == "bind");  // overlayfs needs two lowers without an upper
    CHECK_FALSE(cacheable_rootfs(ov(s2 + ":" + s1, (d / "full").string())));  // upper has content
    CHECK_FALSE(cacheable_rootfs(ov(s2 + ":/nonexistent/layer", (d / "up1").string())));
    // The same path holding another layer (containerd's root wiped, ids reused): a new key.
    std::filesystem::remove_all(d / "s/1/fs");
    std::filesystem::create_directories(d / "s/1/fs");
    auto again = cacheable_rootfs(ov(s2 + ":" + s1, (d / "up1").string()));
    REQUIRE(again);
    CHECK(again->key != a->key);
    CHECK_FALSE(cacheable_rootfs({{"bind", "/snap/5/fs", "", {"rbind", "rw"}}}));  // native snapshotter
    CHECK_FALSE(cacheable_rootfs({}));
    // A cached image is used as it is, nothing mounted.
    std::ofstream(d / (a->key + ".ext4")) << "img";
    auto hit = cached_image(*a, d.string(), "/nonexistent-mount-dir");
    REQUIRE(hit);
    CHECK(*hit == (d / (a->key + ".ext4")).string());
    std::filesystem::remove_all(d);
}

TEST_CASE("prune_image_cache: removes old unused images, keeps used, recent, excepted and foreign files") {
    char tmpl[] = "/tmp/kestrel-cache-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    auto make = [&](const std::string& name, int age_s) {
        std::string p = dir + "/" + name;
        std::ofstream(p) << std::string(4096, 'x');
        struct timespec t[2];
        ::clock_gettime(CLOCK_REALTIME, &t[0]);
        t[0].tv_sec -= age_s;
        t[1] = t[0];
        REQUIRE(::utimensat(AT_FDCWD, p.c_str(), t, 0) == 0);
        return p;
    };
    const std::string old_unused = make("0123456789abcdef.ext4", 7200);
    const std::string old_used = make("1123456789abcdef.ext4", 7200);
    const std::string recent = make("2123456789abcdef.ext4", 60);
    const std::string excepted = make("3123456789abcdef.ext4", 7200);
    const std::string dead_build = make("4123456789abcdef.ext4.tmp.999999999", 0);  // no such pid
    const std::string live_build = make("5123456789abcdef.ext4.tmp." + std::to_string(::getpid()), 7200);
    const std::string foreign = make("notes.ext4", 7200);
    // A VMM using the image: kestrel's (and QEMU's) shared lock on byte 100.
    int user = ::open(old_used.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(user >= 0);
    struct flock fl{};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 100;
    fl.l_len = 1;
    REQUIRE(::fcntl(user, F_OFD_SETLK, &fl) == 0);
    int probe = ::open(old_used.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(probe >= 0);
    CHECK(image_in_use(probe).value());
    int probe2 = ::open(recent.c_str(), O_RDONLY | O_CLOEXEC);
    CHECK_FALSE(image_in_use(probe2).value());
    ::close(probe2);

    auto r = prune_image_cache(dir, std::chrono::hours(1), excepted);
    CHECK(r.problems.empty());
    CHECK(r.removed == 2);
    CHECK(r.removed_bytes == 2 * 4096);
    CHECK(r.kept_in_use == 1);
    auto exists = [](const std::string& p) { return ::access(p.c_str(), F_OK) == 0; };
    CHECK_FALSE(exists(old_unused));
    CHECK_FALSE(exists(dead_build));
    CHECK(exists(old_used));
    CHECK(exists(recent));
    CHECK(exists(excepted));
    CHECK(exists(live_build));
    CHECK(exists(foreign));

    // The user lets go: now it goes too (keep 0: any unused image).
    ::close(user);
    CHECK_FALSE(image_in_use(probe).value());
    ::close(probe);
    r = prune_image_cache(dir, std::chrono::seconds(0), "");
    CHECK(r.removed == 3);   // old_used, recent, excepted
    CHECK(exists(live_build));
    CHECK(exists(foreign));
    CHECK(prune_image_cache(dir + "/absent", std::chrono::seconds(0), "").problems.empty());
    std::filesystem::remove_all(dir);
}
