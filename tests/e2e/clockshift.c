/* clockshift: an LD_PRELOAD shim that moves a process's wall clock, and nothing else.
 *
 * Every read of CLOCK_REALTIME / CLOCK_REALTIME_COARSE through clock_gettime, and every call of
 * gettimeofday and time, gets the float number of seconds in CLOCKSHIFT_SECONDS added (read
 * once, at load). Monotonic and CPU clocks are passed through untouched, and no sleep, wait or
 * condition variable is intercepted: threads keep timing out on the kernel's monotonic clock.
 * That is why this shim does not hang threaded Python 3.11, as Debian's faketime 0.9.10 does.
 *
 * Build: gcc -shared -fPIC -O2 -o clockshift.so clockshift.c -ldl
 * Use:   CLOCKSHIFT_SECONDS=-10 LD_PRELOAD=/path/clockshift.so python ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);

static clock_gettime_fn real_clock_gettime;
static gettimeofday_fn real_gettimeofday;
static long long shift_ns; /* the offset, in nanoseconds (may be negative) */
static int ready;

static int syscall_clock_gettime(clockid_t clock, struct timespec *ts) {
    return (int)syscall(SYS_clock_gettime, clock, ts);
}

/* Idempotent and race-benign: every thread that runs it stores the same values. */
static void init(void) {
    if (__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
        return;
    clock_gettime_fn cg = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    gettimeofday_fn gtod = (gettimeofday_fn)dlsym(RTLD_NEXT, "gettimeofday");
    const char *text = getenv("CLOCKSHIFT_SECONDS");
    double seconds = text ? strtod(text, NULL) : 0.0;
    __atomic_store_n(&real_clock_gettime, cg ? cg : syscall_clock_gettime, __ATOMIC_RELAXED);
    __atomic_store_n(&real_gettimeofday, gtod, __ATOMIC_RELAXED);
    __atomic_store_n(&shift_ns, (long long)(seconds * 1e9), __ATOMIC_RELAXED);
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void clockshift_load(void) { init(); }

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + shift_ns;
    long long sec = ns / 1000000000LL, rem = ns % 1000000000LL;
    if (rem < 0) {
        rem += 1000000000LL;
        sec -= 1;
    }
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = (long)rem;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    init();
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        shift(ts);
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    init();
    int rc = 0;
    if (tz && real_gettimeofday)
        rc = real_gettimeofday(NULL, tz); /* the obsolete zone, left as it is */
    if (rc == 0) {
        struct timespec ts;
        rc = clock_gettime(CLOCK_REALTIME, &ts); /* shifted */
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
