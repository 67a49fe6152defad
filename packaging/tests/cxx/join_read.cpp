// A C++ client of the installed packages, built with CMake (find_package):
//
//     join_read_cxx ZURL OID AT EXPECT
//
// Joins the wcfsd already serving ZURL (no autostart: it must be live),
// maps the whole of ZBigFile OID as of AT (16 hex digits each) and compares
// it with EXPECT, the file as Python ZODB read it. Handles are released by
// RAII in reverse order. Exit status 0 and one "ok" line when it matches.
#include <wcfs.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void check(int rc, const char *what) {
    if (rc < 0)
        throw std::runtime_error(std::string(what) + ": " + wcfs_last_error());
}

template <typename T, int (*Release)(T *)> struct Releaser {
    void operator()(T *h) const { Release(h); }
};
template <typename T, int (*Release)(T *)> using Handle = std::unique_ptr<T, Releaser<T, Release>>;

uint64_t hex(const std::string &s) {
    size_t end = 0;
    uint64_t v = std::stoull(s, &end, 16);
    if (end != s.size())
        throw std::invalid_argument("not a 16-hex-digit id: " + s);
    return v;
}

} // namespace

int main(int argc, char **argv) try {
    if (argc != 5) {
        std::cerr << "usage: join_read_cxx ZURL OID AT EXPECT\n";
        return 2;
    }
    const wcfs_oid oid = hex(argv[2]);
    const wcfs_tid at = hex(argv[3]);
    std::ifstream in(argv[4], std::ios::binary);
    if (!in)
        throw std::runtime_error(std::string("cannot read ") + argv[4]);
    const std::vector<unsigned char> expect{std::istreambuf_iterator<char>(in), {}};

    wcfs_WCFS *w = nullptr;
    check(wcfs_join(argv[1], /*autostart=*/0, &w), "wcfs_join");
    Handle<wcfs_WCFS, wcfs_close> wc(w);
    wcfs_Conn *c = nullptr;
    check(wcfs_connect(wc.get(), at, &c), "wcfs_connect");
    Handle<wcfs_Conn, wcfs_conn_close> conn(c);
    wcfs_FileH *f = nullptr;
    check(wcfs_conn_open(conn.get(), oid, &f), "wcfs_conn_open");
    Handle<wcfs_FileH, wcfs_fileh_close> fh(f);
    const size_t blksize = wcfs_fileh_blksize(fh.get());
    const int64_t nblk = static_cast<int64_t>((expect.size() + blksize - 1) / blksize);
    wcfs_Mapping *mm = nullptr;
    check(wcfs_fileh_mmap(fh.get(), 0, nblk, &mm), "wcfs_fileh_mmap");
    Handle<wcfs_Mapping, wcfs_mapping_unmap> m(mm);

    const std::vector<unsigned char> have(wcfs_mapping_mem_start(m.get()),
                                          wcfs_mapping_mem_start(m.get()) + expect.size());
    if (have != expect)
        throw std::runtime_error("the mapping differs from what Python ZODB read");
    std::printf("join_read_cxx: ok: %zu bytes of %016llx @%016llx at %s\n", expect.size(),
                static_cast<unsigned long long>(oid), static_cast<unsigned long long>(at),
                wcfs_mountpoint(wc.get()));
    return 0;
} catch (const std::exception &e) {
    std::cerr << "join_read_cxx: " << e.what() << "\n";
    return 1;
}
