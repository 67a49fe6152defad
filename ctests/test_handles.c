/* Handle lifecycle against a real daemon: released handles and handles of
 * the wrong kind are errors (never crashes), each handle is released once,
 * parents may close before their children (which then answer -ENOTCONN
 * until released), bad block ranges are -EINVAL. */
#include "testutil.h"

#include <sys/stat.h>

static const char *mnt;
static wcfs_oid foid;

static void attach(wcfs_WCFS **wc) {
    OK(wcfs_attach(mnt, wc));
    CHECK(*wc != NULL, "attach gave NULL");
}

static void basics(void) {
    wcfs_WCFS *wc;
    attach(&wc);
    const char *mp = wcfs_mountpoint(wc);
    CHECK(mp != NULL, "mountpoint");
    struct stat a, b;
    CHECK(stat(mp, &a) == 0 && stat(mnt, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino,
          "mountpoint %s is not %s", mp, mnt);

    wcfs_tid head;
    OK(wcfs_head_at(wc, &head));
    CHECK(head != 0, "head/at is 0");
    FAILS(wcfs_head_at(wc, NULL), EINVAL, "wcfs_head_at");

    wcfs_Conn *conn;
    OK(wcfs_connect(wc, head, &conn));
    CHECK(wcfs_conn_at(conn) == head, "conn_at %016llx != %016llx",
          (unsigned long long)wcfs_conn_at(conn), (unsigned long long)head);
    wcfs_FileH *fh;
    OK(wcfs_conn_open(conn, foid, &fh));
    CHECK(wcfs_fileh_blksize(fh) == 4096, "blksize %zu", wcfs_fileh_blksize(fh));
    CHECK(wcfs_fileh_oid(fh) == foid, "fileh_oid");

    wcfs_Mapping *m;
    FAILS(wcfs_fileh_mmap(fh, -1, 1, &m), EINVAL, "wcfs_fileh_mmap");
    FAILS(wcfs_fileh_mmap(fh, 0, 0, &m), EINVAL, "wcfs_fileh_mmap");
    FAILS(wcfs_fileh_mmap(fh, 0, -3, &m), EINVAL, "wcfs_fileh_mmap");
    FAILS(wcfs_fileh_mmap(fh, INT64_MAX, 2, &m), EINVAL, "wcfs_fileh_mmap");
    OK(wcfs_fileh_mmap(fh, 1, 2, &m));
    CHECK(wcfs_mapping_blk_start(m) == 1, "blk_start");
    const uint8_t *p = wcfs_mapping_mem_start(m), *q = wcfs_mapping_mem_stop(m);
    CHECK(p && q && q - p == 2 * 4096, "mapping size %td", q - p);
    /* The harness filled block k with byte k+1 (4 blocks). */
    CHECK(p[0] == 2 && p[4095] == 2 && p[4096] == 3 && p[8191] == 3, "mapping content");
    OK(wcfs_mapping_remmap_blk(m, 1));
    OK(wcfs_mapping_remmap_blk(m, 2));
    CHECK(p[0] == 2 && p[4096] == 3, "content after remmap_blk");
    CHECK(wcfs_mapping_remmap_blk(m, 0) == -EINVAL, "remmap_blk below the mapping");
    CHECK(wcfs_mapping_remmap_blk(m, 3) == -EINVAL, "remmap_blk above the mapping");

    /* Wrong kinds: a handle of one kind where another is wanted. */
    FAILS(wcfs_conn_resync((wcfs_Conn *)fh, head), EINVAL, "wcfs_conn_resync");
    CHECK(strstr(wcfs_last_error(), "wcfs_FileH"), "names the kind: %s", wcfs_last_error());
    FAILS(wcfs_fileh_close((wcfs_FileH *)m), EINVAL, "wcfs_fileh_close");
    FAILS(wcfs_mapping_unmap((wcfs_Mapping *)conn), EINVAL, "wcfs_mapping_unmap");
    FAILS(wcfs_close((wcfs_WCFS *)conn), EINVAL, "wcfs_close");
    FAILS(wcfs_conn_close((wcfs_Conn *)wc), EINVAL, "wcfs_conn_close");
    CHECK(wcfs_conn_at((wcfs_Conn *)wc) == 0, "conn_at of a WCFS");
    /* ... and those handles are still alive afterwards. */
    CHECK(wcfs_fileh_blksize(fh) == 4096 && wcfs_mapping_blk_start(m) == 1, "handles survive");

    /* Released once, in child-to-parent order; the second release fails. */
    size_t live = wcfs_live_handles();
    CHECK(live >= 4, "live handles %zu", live);
    OK(wcfs_mapping_unmap(m));
    FAILS(wcfs_mapping_unmap(m), EINVAL, "wcfs_mapping_unmap");
    CHECK(strstr(wcfs_last_error(), "released"), "says released: %s", wcfs_last_error());
    CHECK(wcfs_mapping_mem_start(m) == NULL, "mem_start of a released mapping");
    FAILS(wcfs_mapping_remmap_blk(m, 1), EINVAL, "wcfs_mapping_remmap_blk");
    OK(wcfs_fileh_close(fh));
    FAILS(wcfs_fileh_close(fh), EINVAL, "wcfs_fileh_close");
    FAILS(wcfs_fileh_mmap(fh, 0, 1, &m), EINVAL, "wcfs_fileh_mmap");
    OK(wcfs_conn_close(conn));
    FAILS(wcfs_conn_close(conn), EINVAL, "wcfs_conn_close");
    FAILS(wcfs_conn_open(conn, foid, &fh), EINVAL, "wcfs_conn_open");
    OK(wcfs_close(wc));
    FAILS(wcfs_close(wc), EINVAL, "wcfs_close");
    FAILS(wcfs_connect(wc, head, &conn), EINVAL, "wcfs_connect");
    CHECK(wcfs_mountpoint(wc) == NULL, "mountpoint of a released WCFS");
    CHECK(wcfs_live_handles() == live - 4, "live handles %zu, want %zu", wcfs_live_handles(), live - 4);
}

/* Parents closed first: the children answer -ENOTCONN until released, and
 * releasing them still works exactly once. */
static void parents_first(void) {
    wcfs_WCFS *wc;
    attach(&wc);
    wcfs_tid head;
    OK(wcfs_head_at(wc, &head));
    wcfs_Conn *conn;
    OK(wcfs_connect(wc, head, &conn));
    wcfs_FileH *fh;
    OK(wcfs_conn_open(conn, foid, &fh));
    wcfs_Mapping *m;
    OK(wcfs_fileh_mmap(fh, 0, 4, &m));

    OK(wcfs_close(wc));
    wcfs_Conn *conn2;
    wcfs_FileH *fh2;
    /* The Conn outlives its WCFS handle as a handle, but the daemon link of
     * a closed WCFS is gone: new work fails with ENOTCONN. */
    FAILS(wcfs_conn_open(conn, foid, &fh2), ENOTCONN, "wcfs_conn_open");
    FAILS(wcfs_connect(wc, head, &conn2), EINVAL, "wcfs_connect");

    OK(wcfs_conn_close(conn));
    wcfs_Mapping *m2;
    FAILS(wcfs_fileh_mmap(fh, 0, 1, &m2), ENOTCONN, "wcfs_fileh_mmap");
    FAILS(wcfs_mapping_remmap_blk(m, 0), ENOTCONN, "wcfs_mapping_remmap_blk");
    int rc = wcfs_mapping_unmap(m);
    CHECK(rc == 0 || rc == -ENOTCONN, "unmap under a closed Conn = %d", rc);
    FAILS(wcfs_mapping_unmap(m), EINVAL, "wcfs_mapping_unmap");
    rc = wcfs_fileh_close(fh);
    CHECK(rc == 0 || rc == -ENOTCONN, "fileh_close under a closed Conn = %d", rc);
    FAILS(wcfs_fileh_close(fh), EINVAL, "wcfs_fileh_close");
}

/* Bad arguments that reach the daemon: an oid that is no ZBigFile, going
 * back in time (which takes the Conn down). */
static void bad_arguments(void) {
    wcfs_WCFS *wc;
    attach(&wc);
    wcfs_tid head;
    OK(wcfs_head_at(wc, &head));
    wcfs_Conn *conn;
    OK(wcfs_connect(wc, head, &conn));
    wcfs_FileH *fh = (wcfs_FileH *)1;
    int rc = wcfs_conn_open(conn, 0 /* the root object: not a ZBigFile */, &fh);
    CHECK(rc < 0 && fh == NULL, "open of the root object = %d", rc);
    rc = wcfs_conn_open(conn, 0x7fffffffffffULL /* no such object */, &fh);
    CHECK(rc < 0 && fh == NULL, "open of a missing oid = %d", rc);

    rc = wcfs_conn_resync(conn, head - 1);
    CHECK(rc < 0, "resync backwards = %d", rc);
    rc = wcfs_conn_open(conn, foid, &fh);
    CHECK(rc == -ENOTCONN, "open on a Conn taken down by a backward resync = %d", rc);
    (void)wcfs_conn_close(conn); /* may report why it went down; released either way */
    FAILS(wcfs_conn_close(conn), EINVAL, "wcfs_conn_close");
    OK(wcfs_close(wc));
}

int main(void) {
    mnt = env_or_skip("WCFS_TEST_MNT");
    foid = parse_hex(env_or_skip("WCFS_TEST_OID"));
    basics();
    parents_first();
    bad_arguments();
    CHECK(wcfs_live_handles() == 0, "live handles left: %zu", wcfs_live_handles());
    printf("test_handles: ok\n");
    return 0;
}
