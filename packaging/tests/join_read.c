/* A C client of the installed packages, built with pkg-config:
 *
 *     cc join_read.c $(pkg-config --cflags --libs wcfs) -o join_read
 *     join_read ZURL OID AT NBLK EXPECT
 *
 * Joins the wcfsd of ZURL, starting it if none serves (autostart: libwcfs
 * finds the installed daemon by itself), maps blocks [0, NBLK) of ZBigFile
 * OID as of AT (16 hex digits each) and compares the memory with EXPECT —
 * the file as Python ZODB read it; memory past EXPECT's size must read as
 * zeros. Exit status 0 and one "ok" line when everything matches. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wcfs.h>

static int fail(const char *what, int rc) {
    fprintf(stderr, "join_read: %s: %s (%d)\n", what, wcfs_last_error(), rc);
    return 1;
}

static uint64_t hex(const char *s) {
    char *end;
    errno = 0;
    uint64_t v = strtoull(s, &end, 16);
    if (errno || *s == 0 || *end != 0) {
        fprintf(stderr, "join_read: not a 16-hex-digit id: %s\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: join_read ZURL OID AT NBLK EXPECT\n");
        return 2;
    }
    const char *zurl = argv[1];
    wcfs_oid oid = hex(argv[2]);
    wcfs_tid at = hex(argv[3]);
    int64_t nblk = atoll(argv[4]);

    FILE *f = fopen(argv[5], "rb");
    if (!f) {
        perror(argv[5]);
        return 1;
    }
    static uint8_t expect[16 << 20];
    size_t n = fread(expect, 1, sizeof expect, f);
    fclose(f);

    wcfs_WCFS *wc;
    wcfs_Conn *conn;
    wcfs_FileH *fh;
    wcfs_Mapping *m;
    int rc;
    if ((rc = wcfs_join(zurl, 1, &wc)) < 0)
        return fail("wcfs_join", rc);
    if ((rc = wcfs_connect(wc, at, &conn)) < 0)
        return fail("wcfs_connect", rc);
    if ((rc = wcfs_conn_open(conn, oid, &fh)) < 0)
        return fail("wcfs_conn_open", rc);
    if ((rc = wcfs_fileh_mmap(fh, 0, nblk, &m)) < 0)
        return fail("wcfs_fileh_mmap", rc);
    const uint8_t *mem = wcfs_mapping_mem_start(m);
    size_t len = (size_t)(wcfs_mapping_mem_stop(m) - mem);
    if (len != (size_t)nblk * wcfs_fileh_blksize(fh) || n > len) {
        fprintf(stderr, "join_read: mapped %zu bytes, expected %zu of data in %" PRId64 " blocks\n",
                len, n, nblk);
        return 1;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t want = i < n ? expect[i] : 0;
        if (mem[i] != want) {
            fprintf(stderr, "join_read: byte %zu is %u, ZODB has %u\n", i, mem[i], want);
            return 1;
        }
    }
    printf("join_read: ok: %zu bytes of %016" PRIx64 " @%016" PRIx64 " (%zu of data) at %s\n", len,
           oid, at, n, wcfs_mountpoint(wc));
    if ((rc = wcfs_mapping_unmap(m)) < 0 || (rc = wcfs_fileh_close(fh)) < 0 ||
        (rc = wcfs_conn_close(conn)) < 0 || (rc = wcfs_close(wc)) < 0)
        return fail("close", rc);
    return 0;
}
