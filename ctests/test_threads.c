/* The API from many threads at once, against a real daemon:
 * - workers open, map, read and release their own handles on one shared
 *   Conn concurrently, and see the right data;
 * - racers all try to release the same handles at the same time: each
 *   handle is released exactly once (one 0, every other call -EINVAL), and
 *   calls on a handle racing with its release give 0 or -EINVAL, never a
 *   crash. */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>

#define NWORKERS 4
#define NITER 40
#define NSLOTS 48
#define NRACERS 4

static wcfs_Conn *conn;
static wcfs_oid foid;

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < NITER; i++) {
        wcfs_FileH *fh;
        wcfs_Mapping *m;
        OK(wcfs_conn_open(conn, foid, &fh));
        OK(wcfs_fileh_mmap(fh, i % 4, 4 - i % 4, &m));
        const uint8_t *p = wcfs_mapping_mem_start(m);
        for (int b = i % 4; b < 4; b++)
            CHECK(p[(size_t)(b - i % 4) * 4096 + (size_t)(i * 37 % 4096)] == b + 1, "block %d content", b);
        OK(wcfs_mapping_unmap(m));
        OK(wcfs_fileh_close(fh));
    }
    return NULL;
}

static wcfs_FileH *fhs[NSLOTS];
static wcfs_Mapping *maps[NSLOTS];
static atomic_int released_fh[NSLOTS], released_map[NSLOTS];
static atomic_int go;

static void *racer(void *arg) {
    int me = (int)(intptr_t)arg;
    while (!atomic_load(&go))
        ;
    for (int k = 0; k < NSLOTS; k++) {
        int i = (k + me * 7) % NSLOTS; /* racers start at different slots */
        int64_t b = wcfs_mapping_blk_start(maps[i]);
        CHECK(b == 0 || b == -EINVAL, "blk_start racing with unmap = %lld", (long long)b);
        int rc = wcfs_mapping_unmap(maps[i]);
        CHECK(rc == 0 || rc == -EINVAL, "unmap = %d", rc);
        if (rc == 0)
            atomic_fetch_add(&released_map[i], 1);
        size_t bs = wcfs_fileh_blksize(fhs[i]);
        CHECK(bs == 4096 || bs == 0, "blksize racing with close = %zu", bs);
        rc = wcfs_fileh_close(fhs[i]);
        CHECK(rc == 0 || rc == -EINVAL, "fileh_close = %d", rc);
        if (rc == 0)
            atomic_fetch_add(&released_fh[i], 1);
    }
    return NULL;
}

int main(void) {
    const char *mnt = env_or_skip("WCFS_TEST_MNT");
    foid = parse_hex(env_or_skip("WCFS_TEST_OID"));
    wcfs_WCFS *wc;
    OK(wcfs_attach(mnt, &wc));
    wcfs_tid head;
    OK(wcfs_head_at(wc, &head));
    OK(wcfs_connect(wc, head, &conn));

    pthread_t t[NWORKERS + NRACERS];
    for (int i = 0; i < NWORKERS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, NULL) == 0, "pthread_create");
    for (int i = 0; i < NWORKERS; i++)
        pthread_join(t[i], NULL);

    for (int i = 0; i < NSLOTS; i++) {
        OK(wcfs_conn_open(conn, foid, &fhs[i]));
        OK(wcfs_fileh_mmap(fhs[i], 0, 1 + i % 4, &maps[i]));
    }
    for (int i = 0; i < NRACERS; i++)
        CHECK(pthread_create(&t[i], NULL, racer, (void *)(intptr_t)i) == 0, "pthread_create");
    atomic_store(&go, 1);
    for (int i = 0; i < NRACERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NSLOTS; i++) {
        CHECK(atomic_load(&released_map[i]) == 1, "mapping %d released %d times", i, atomic_load(&released_map[i]));
        CHECK(atomic_load(&released_fh[i]) == 1, "fileh %d released %d times", i, atomic_load(&released_fh[i]));
    }

    OK(wcfs_conn_close(conn));
    OK(wcfs_close(wc));
    CHECK(wcfs_live_handles() == 0, "live handles left: %zu", wcfs_live_handles());
    printf("test_threads: ok (%d workers x %d, %d racers x %d handles)\n", NWORKERS, NITER, NRACERS, NSLOTS);
    return 0;
}
