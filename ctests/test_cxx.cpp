// The header compiles as C++ (-pedantic -Werror, C++11) and links: the
// functions have C linkage, the handle types are distinct incomplete types,
// and the id types are 64-bit.
#include <wcfs.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

static_assert(sizeof(wcfs_tid) == 8 && std::is_unsigned<wcfs_tid>::value, "wcfs_tid is uint64_t");
static_assert(sizeof(wcfs_oid) == 8 && std::is_unsigned<wcfs_oid>::value, "wcfs_oid is uint64_t");
static_assert(!std::is_same<wcfs_Conn, wcfs_FileH>::value, "handle types are distinct");

// Taking the address of every SPEC §8 function with its exact C++ type
// catches a signature drift at compile time.
static int (*const join_fn)(const char *, int, wcfs_WCFS **) = wcfs_join;
static int (*const attach_fn)(const char *, wcfs_WCFS **) = wcfs_attach;
static const char *(*const mountpoint_fn)(const wcfs_WCFS *) = wcfs_mountpoint;
static int (*const head_at_fn)(wcfs_WCFS *, wcfs_tid *) = wcfs_head_at;
static int (*const close_fn)(wcfs_WCFS *) = wcfs_close;
static int (*const connect_fn)(wcfs_WCFS *, wcfs_tid, wcfs_Conn **) = wcfs_connect;
static wcfs_tid (*const conn_at_fn)(const wcfs_Conn *) = wcfs_conn_at;
static int (*const resync_fn)(wcfs_Conn *, wcfs_tid) = wcfs_conn_resync;
static int (*const conn_close_fn)(wcfs_Conn *) = wcfs_conn_close;
static int (*const open_fn)(wcfs_Conn *, wcfs_oid, wcfs_FileH **) = wcfs_conn_open;
static size_t (*const blksize_fn)(const wcfs_FileH *) = wcfs_fileh_blksize;
static int (*const fileh_close_fn)(wcfs_FileH *) = wcfs_fileh_close;
static int (*const mmap_fn)(wcfs_FileH *, int64_t, int64_t, wcfs_Mapping **) = wcfs_fileh_mmap;
static const uint8_t *(*const mem_start_fn)(const wcfs_Mapping *) = wcfs_mapping_mem_start;
static const uint8_t *(*const mem_stop_fn)(const wcfs_Mapping *) = wcfs_mapping_mem_stop;
static int64_t (*const blk_start_fn)(const wcfs_Mapping *) = wcfs_mapping_blk_start;
static int (*const remmap_fn)(wcfs_Mapping *, int64_t) = wcfs_mapping_remmap_blk;
static int (*const unmap_fn)(wcfs_Mapping *) = wcfs_mapping_unmap;

static int failures = 0;
#define EXPECT(cond)                                                       \
    do {                                                                   \
        if (!(cond)) {                                                     \
            std::fprintf(stderr, "%s:%d: FAIL: %s (last error: %s)\n",     \
                         __FILE__, __LINE__, #cond, wcfs_last_error());    \
            failures++;                                                    \
        }                                                                  \
    } while (0)

int main() {
    std::string version = wcfs_version();
    EXPECT(!version.empty());

    wcfs_WCFS *wc = nullptr;
    EXPECT(join_fn(nullptr, 0, &wc) == -EINVAL);
    EXPECT(attach_fn(nullptr, &wc) == -EINVAL);
    EXPECT(mountpoint_fn(nullptr) == nullptr);
    wcfs_tid at = 0;
    EXPECT(head_at_fn(nullptr, &at) == -EINVAL);
    EXPECT(close_fn(nullptr) == -EINVAL);
    wcfs_Conn *conn = nullptr;
    EXPECT(connect_fn(nullptr, 1, &conn) == -EINVAL);
    EXPECT(conn_at_fn(nullptr) == 0);
    EXPECT(resync_fn(nullptr, 1) == -EINVAL);
    EXPECT(conn_close_fn(nullptr) == -EINVAL);
    wcfs_FileH *fh = nullptr;
    EXPECT(open_fn(nullptr, 1, &fh) == -EINVAL);
    EXPECT(blksize_fn(nullptr) == 0);
    EXPECT(fileh_close_fn(nullptr) == -EINVAL);
    wcfs_Mapping *m = nullptr;
    EXPECT(mmap_fn(nullptr, 0, 1, &m) == -EINVAL);
    EXPECT(mem_start_fn(nullptr) == nullptr);
    EXPECT(mem_stop_fn(nullptr) == nullptr);
    EXPECT(blk_start_fn(nullptr) == -EINVAL);
    EXPECT(remmap_fn(nullptr, 0) == -EINVAL);
    EXPECT(unmap_fn(nullptr) == -EINVAL);
    EXPECT(std::strstr(wcfs_last_error(), "wcfs_mapping_unmap") != nullptr);

    if (failures)
        return 1;
    std::printf("test_cxx: ok (libwcfs %s)\n", version.c_str());
    return 0;
}
