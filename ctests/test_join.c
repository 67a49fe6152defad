/* wcfs_join against the real lifecycle: without autostart a zurl nobody
 * serves is an error; with autostart the wcfsd installed beside the library
 * (found from libwcfs.so's own location, $WCFS_WCFSD unset) is started at
 * /dev/shm/wcfs/<sha1 of zurl> (beside the harness's daemon, on the same
 * data.fs) and serves the same data; a second join finds it. The daemon is
 * stopped with `wcfsd stop ZURL` at the end. */
#include "testutil.h"

#include <dirent.h>
#include <limits.h>

static const char *wcfsd;
static const char *zurl;

/* The executable of the process whose command line has `zurl` and `mp`
 * (the daemon serving it), or "" if none. */
static void daemon_exe(const char *mp, char *exe, size_t n) {
    exe[0] = 0;
    DIR *d = opendir("/proc");
    CHECK(d, "opendir /proc");
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[300], cmd[16384];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        int has_zurl = 0, has_mp = 0;
        for (size_t off = 0; off < len; off += strlen(cmd + off) + 1) {
            cmd[len] = 0;
            has_zurl |= strcmp(cmd + off, zurl) == 0;
            has_mp |= strcmp(cmd + off, mp) == 0;
        }
        if (has_zurl && has_mp) {
            snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
            ssize_t k = readlink(path, exe, n - 1);
            exe[k > 0 ? k : 0] = 0;
            break;
        }
    }
    closedir(d);
}


static void stop_daemon(void) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' stop '%s' >/dev/null 2>&1", wcfsd, zurl);
    (void)!system(cmd);
}

int main(void) {
    wcfsd = env_or_skip("WCFS_TEST_WCFSD");
    zurl = env_or_skip("WCFS_TEST_ZURL");
    const char *mnt = env_or_skip("WCFS_TEST_MNT");
    wcfs_oid foid = parse_hex(env_or_skip("WCFS_TEST_OID"));
    const char *datafs = env_or_skip("WCFS_TEST_DATAFS");

    char other[8192];
    snprintf(other, sizeof other, "file://%s.nobody-serves-this", datafs);
    wcfs_WCFS *wc = (wcfs_WCFS *)1;
    int rc = wcfs_join(other, 0, &wc);
    CHECK(rc < 0 && wc == NULL, "join without autostart of an unserved zurl = %d", rc);
    CHECK(strstr(wcfs_last_error(), "wcfs_join"), "message: %s", wcfs_last_error());

    stop_daemon(); /* a leftover of an earlier run would not be ours */
    OK(wcfs_join(zurl, 1, &wc));
    atexit(stop_daemon);
    const char *mp = wcfs_mountpoint(wc);
    CHECK(mp && strncmp(mp, "/dev/shm/wcfs/", 14) == 0 && strlen(mp) == 14 + 40 &&
              strspn(mp + 14, "0123456789abcdef") == 40,
          "mountpoint %s is not /dev/shm/wcfs/<sha1>", mp ? mp : "(null)");

    /* It is the wcfsd installed beside the library. */
    char exe[PATH_MAX], want[PATH_MAX];
    daemon_exe(mp, exe, sizeof exe);
    CHECK(realpath(wcfsd, want), "realpath %s", wcfsd);
    CHECK(strcmp(exe, want) == 0, "joined daemon runs %s, not the installed %s", exe, want);

    /* Same data as the harness's daemon shows. */
    wcfs_WCFS *ref;
    OK(wcfs_attach(mnt, &ref));
    wcfs_tid head, refhead;
    OK(wcfs_head_at(wc, &head));
    OK(wcfs_head_at(ref, &refhead));
    CHECK(head == refhead, "joined head %016llx != %016llx", (unsigned long long)head,
          (unsigned long long)refhead);
    wcfs_Conn *conn;
    wcfs_FileH *fh;
    wcfs_Mapping *m;
    OK(wcfs_connect(wc, head, &conn));
    OK(wcfs_conn_open(conn, foid, &fh));
    OK(wcfs_fileh_mmap(fh, 0, 4, &m));
    const uint8_t *p = wcfs_mapping_mem_start(m);
    for (int b = 0; b < 4; b++)
        for (size_t off = 0; off < 4096; off += 511)
            CHECK(p[(size_t)b * 4096 + off] == b + 1, "block %d +%zu", b, off);

    wcfs_WCFS *again;
    OK(wcfs_join(zurl, 0, &again));
    CHECK(strcmp(wcfs_mountpoint(again), mp) == 0, "second join elsewhere: %s", wcfs_mountpoint(again));
    OK(wcfs_close(again));

    OK(wcfs_mapping_unmap(m));
    OK(wcfs_fileh_close(fh));
    OK(wcfs_conn_close(conn));
    OK(wcfs_close(wc));
    OK(wcfs_close(ref));
    CHECK(wcfs_live_handles() == 0, "live handles left: %zu", wcfs_live_handles());
    printf("test_join: ok\n");
    return 0;
}
