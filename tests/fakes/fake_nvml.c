/*
 * fake_nvml.c - a stand-in libnvidia-ml.so.1 that serves scripted readings.
 *
 * Built by tests/fakes/fakenvml.py:
 *   cc -shared -fPIC -O2 -Wall -Werror -pthread -Wl,-soname,libnvidia-ml.so.1 \
 *      -o libnvidia-ml.so.1 fake_nvml.c
 * and loaded with LD_PRELOAD, so that pynvml's CDLL("libnvidia-ml.so.1") gets
 * this object (glibc matches the already-loaded SONAME).
 *
 * Readings come from the trace file named by $FAKE_NVML_TRACE (format: see
 * tests/fakes/README.md).  T0 (time zero of the trace) is $FAKE_NVML_T0_NS, a
 * CLOCK_MONOTONIC time in ns, or else the time of the first successful init.
 *
 * Only the exported entry points are non-static.  Everything is guarded by
 * one mutex.  Nothing is printed except one stderr line on a trace error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ NVML ABI */

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_ALREADY_INITIALIZED 5
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_LIBRARY_NOT_FOUND 12
#define NVML_ERROR_FUNCTION_NOT_FOUND 13
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25
#define NVML_ERROR_UNKNOWN 999

#define NVML_CLOCK_GRAPHICS 0
#define NVML_CLOCK_SM 1
#define NVML_CLOCK_MEM 2
#define NVML_CLOCK_VIDEO 3

#define NVML_TEMPERATURE_GPU 0

#define NVML_VALUE_TYPE_UNSIGNED_INT 1
#define NVML_FI_DEV_POWER_INSTANT 186

#define NVML_VALUE_NOT_AVAILABLE_UINT 0xFFFFFFFFu

#define NVML_MEMORY_V2_VERSION 0x02000028u  /* sizeof(nvmlMemory_v2_t) | 2 << 24 */
#define NVML_TEMPERATURE_V1_VERSION 0x0100000Cu

#define FAKE_DRIVER_VERSION "550.54.15-fake"
#define FAKE_NVML_VERSION "12.550.54.15-fake"
#define FAKE_CUDA_DRIVER_VERSION 12040
/* GpuIdle | AppClocks | SwPowerCap | HwSlowdown | SyncBoost | SwThermal |
 * HwThermal | HwPowerBrake | DisplayClock */
#define FAKE_SUPPORTED_EVENT_REASONS 0x1FFull

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned int version; unsigned int sensorType; int temperature; } nvmlTemperature_v1_t;
/* nvmlDeviceGet*RunningProcesses (v1) */
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; } nvmlProcessInfo_v1_t;
/* _v2 and _v3 share this layout (pynvml: c_nvmlProcessInfo_v3_t = c_nvmlProcessInfo_v2_t) */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_v2_t;
typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    signed int siVal;
    unsigned short usVal;
} nvmlValue_t;
typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    unsigned int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

_Static_assert(sizeof(nvmlMemory_v2_t) == 0x28, "nvmlMemory_v2_t layout");
_Static_assert(sizeof(nvmlProcessInfo_v2_t) == 24, "nvmlProcessInfo_v2_t layout");
_Static_assert(sizeof(nvmlFieldValue_t) == 40, "nvmlFieldValue_t layout");
_Static_assert(sizeof(nvmlTemperature_v1_t) == 12, "nvmlTemperature_v1_t layout");

/* ------------------------------------------------------------------ state */

#define MAX_GPUS 8
#define MAX_PROCS 64

enum metric {
    M_FAN, M_POWER_INSTANT, M_POWER, M_ENERGY, M_TEMPERATURE, M_UTILIZATION, M_CLOCKS,
    M_PSTATE, M_THROTTLE, M_PROCESSES, M_MEMORY, M_BUS_WIDTH, M_MAX_CLOCKS, M_POWER_LIMIT,
    M_COUNT
};
static const char *const metric_names[M_COUNT] = {
    "fan", "power_instant", "power", "energy", "temperature", "utilization", "clocks",
    "pstate", "throttle", "processes", "memory", "bus_width", "max_clocks", "power_limit",
};

/* reading columns of an `at` row; a row that omits a column keeps the previous
 * row's value (the first row of a gpu defaults to 0) */
enum col {
    C_UTIL_GPU, C_UTIL_MEM, C_MEM_USED, C_POWER, C_TEMP, C_SM_CLOCK, C_MEM_CLOCK, C_FAN,
    C_PSTATE, C_THROTTLE, C_COUNT
};
static const char *const col_names[C_COUNT] = {
    "util_gpu", "util_mem", "mem_used_mib", "power_w", "temp_c", "sm_clock_mhz",
    "mem_clock_mhz", "fan_pct", "pstate", "throttle",
};

struct row {
    double t_ms;
    long seq; /* file order, to keep the sort stable */
    unsigned set; /* bit per col given on the line */
    unsigned util_gpu, util_mem;
    unsigned long long mem_used_mib;
    double power_w;
    int temp_c;
    unsigned sm_clock, mem_clock, fan_pct, pstate;
    unsigned long long throttle;
};

struct proc { int self; unsigned pid; unsigned long long used_mib; };

struct gpu {
    unsigned index;
    int declared;
    int decl_line;
    char name[96];
    char uuid[96];
    unsigned long long memory_total_mib;
    double power_limit_w;
    unsigned bus_width, max_mem_clock, max_sm_clock, fans;
    unsigned long long energy_offset_mj;
    unsigned notsupported; /* bit per enum metric */
    long fail_after; /* -1: never */
    unsigned long calls;
    unsigned long long energy_update_ms;
    struct row *rows;
    double *cum_mj; /* integral of power from 0 to rows[i].t_ms */
    size_t nrows, caprows;
    struct proc procs[MAX_PROCS];
    unsigned nprocs;
};

/* The handle pynvml gets is &handles[i]: a pointer into this static array. */
struct nvmlDevice_st { unsigned index; };
typedef struct nvmlDevice_st *nvmlDevice_t;
static struct nvmlDevice_st handles[MAX_GPUS] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int refcount;
static int loaded;
static long long t0_ns;
static unsigned ngpus;
static struct gpu gpus[MAX_GPUS];

/* ------------------------------------------------------------------ time */

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double now_ms(void) { return (double)(mono_ns() - t0_ns) / 1e6; }

/* no libm: floor() and round-half-up for the values we handle */
static double floor_d(double x) {
    double t = (double)(long long)x;
    return (t > x) ? t - 1.0 : t;
}
static unsigned long long round_u(double x) { return x <= 0 ? 0 : (unsigned long long)(x + 0.5); }

/* ------------------------------------------------------------------ trace parsing */

static int trace_line;
static char errbuf[256];

static int fail(const char *fmt, const char *arg) {
    snprintf(errbuf, sizeof errbuf, fmt, arg ? arg : "");
    return -1;
}

/* Split a line into tokens in place.  Whitespace separates tokens, `"` quotes
 * (with \" and \\ escapes inside quotes), `#` outside quotes ends the line. */
static int tokenize(char *line, char **tok, int maxtok, int *ntok) {
    int n = 0;
    char *r = line, *w = line;
    for (;;) {
        while (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n') r++;
        if (*r == '\0' || *r == '#') break;
        if (n == maxtok) return fail("too many fields%s", NULL);
        tok[n++] = w;
        while (*r && *r != ' ' && *r != '\t' && *r != '\r' && *r != '\n' && *r != '#') {
            if (*r == '"') {
                r++;
                while (*r && *r != '"') {
                    if (*r == '\\' && (r[1] == '"' || r[1] == '\\')) r++;
                    *w++ = *r++;
                }
                if (*r != '"') return fail("unterminated quote%s", NULL);
                r++;
            } else {
                *w++ = *r++;
            }
        }
        int end = (*r == '\0' || *r == '#');
        *w++ = '\0';
        if (end) break;
        r++;
    }
    *ntok = n;
    return 0;
}

static int parse_ull(const char *s, int base, unsigned long long *out) {
    char *end;
    if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ') return fail("bad number '%s'", s);
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end != '\0') return fail("bad number '%s'", s);
    *out = v;
    return 0;
}

static int parse_uint(const char *s, unsigned *out) {
    unsigned long long v;
    if (parse_ull(s, 10, &v)) return -1;
    if (v > 0xFFFFFFFFull) return fail("number out of range '%s'", s);
    *out = (unsigned)v;
    return 0;
}

static int parse_int(const char *s, int *out) {
    char *end;
    if (*s == '\0') return fail("bad number '%s'", s);
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < -2147483647L || v > 2147483647L) return fail("bad number '%s'", s);
    *out = (int)v;
    return 0;
}

static int parse_nonneg_double(const char *s, double *out) {
    char *end;
    if (*s == '\0' || *s == ' ') return fail("bad number '%s'", s);
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end != '\0' || !(v >= 0.0) || v > 1e300) return fail("bad non-negative number '%s'", s);
    *out = v;
    return 0;
}

static int split_kv(char *tok, char **key, char **val) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok) return fail("expected key=value, got '%s'", tok);
    *eq = '\0';
    *key = tok;
    *val = eq + 1;
    return 0;
}

static int gpu_ref(const char *s, struct gpu **g) {
    unsigned idx;
    if (parse_uint(s, &idx)) return -1;
    if (idx >= MAX_GPUS || !gpus[idx].declared) return fail("gpu %s is not declared (a `gpu` line must come first)", s);
    *g = &gpus[idx];
    return 0;
}

static int set_str(char *dst, size_t cap, const char *val, const char *what) {
    if (strlen(val) >= cap - 1) return fail("%s too long", what);
    strcpy(dst, val);
    return 0;
}

static int d_gpu(char **tok, int n) {
    unsigned idx;
    if (n < 2) return fail("usage: gpu <idx> key=value ...%s", NULL);
    if (parse_uint(tok[1], &idx)) return -1;
    if (idx >= MAX_GPUS) return fail("gpu index %s out of range (at most 8 gpus)", tok[1]);
    struct gpu *g = &gpus[idx];
    if (g->declared) return fail("gpu %s declared twice", tok[1]);
    g->declared = 1;
    g->decl_line = trace_line;
    g->index = idx;
    snprintf(g->name, sizeof g->name, "NVIDIA Fake GPU %u", idx);
    snprintf(g->uuid, sizeof g->uuid, "GPU-00000000-0000-0000-0000-%012u", idx);
    for (int i = 2; i < n; i++) {
        char *k, *v;
        if (split_kv(tok[i], &k, &v)) return -1;
        int rc;
        if (!strcmp(k, "name")) rc = set_str(g->name, sizeof g->name, v, "name");
        else if (!strcmp(k, "uuid")) rc = set_str(g->uuid, sizeof g->uuid, v, "uuid");
        else if (!strcmp(k, "memory_total_mib")) rc = parse_ull(v, 10, &g->memory_total_mib);
        else if (!strcmp(k, "power_limit_w")) rc = parse_nonneg_double(v, &g->power_limit_w);
        else if (!strcmp(k, "bus_width")) rc = parse_uint(v, &g->bus_width);
        else if (!strcmp(k, "max_mem_clock_mhz")) rc = parse_uint(v, &g->max_mem_clock);
        else if (!strcmp(k, "max_sm_clock_mhz")) rc = parse_uint(v, &g->max_sm_clock);
        else if (!strcmp(k, "fans")) rc = parse_uint(v, &g->fans);
        else if (!strcmp(k, "energy_offset_mj")) rc = parse_ull(v, 10, &g->energy_offset_mj);
        else rc = fail("unknown gpu key '%s'", k);
        if (rc) return -1;
    }
    return 0;
}

static int d_notsupported(char **tok, int n) {
    struct gpu *g;
    if (n != 3) return fail("usage: notsupported <idx> <metric>%s", NULL);
    if (gpu_ref(tok[1], &g)) return -1;
    for (int m = 0; m < M_COUNT; m++) {
        if (!strcmp(tok[2], metric_names[m])) {
            g->notsupported |= 1u << m;
            return 0;
        }
    }
    return fail("unknown metric '%s'", tok[2]);
}

static int d_fail_after(char **tok, int n) {
    struct gpu *g;
    unsigned v;
    if (n != 3) return fail("usage: fail_after <idx> <n>%s", NULL);
    if (gpu_ref(tok[1], &g) || parse_uint(tok[2], &v)) return -1;
    g->fail_after = (long)v;
    return 0;
}

static int d_energy_update(char **tok, int n) {
    struct gpu *g;
    if (n != 3) return fail("usage: energy_update_ms <idx> <ms>%s", NULL);
    if (gpu_ref(tok[1], &g) || parse_ull(tok[2], 10, &g->energy_update_ms)) return -1;
    return 0;
}

static int d_process(char **tok, int n) {
    struct gpu *g;
    if (n != 4) return fail("usage: process <idx> <pid|self> <used_mib>%s", NULL);
    if (gpu_ref(tok[1], &g)) return -1;
    if (g->nprocs == MAX_PROCS) return fail("too many processes (at most 64 per gpu)%s", NULL);
    struct proc *p = &g->procs[g->nprocs];
    if (!strcmp(tok[2], "self")) {
        p->self = 1;
    } else {
        p->self = 0;
        if (parse_uint(tok[2], &p->pid)) return -1;
    }
    if (parse_ull(tok[3], 10, &p->used_mib)) return -1;
    g->nprocs++;
    return 0;
}

static int d_at(char **tok, int n, long seq) {
    struct gpu *g;
    double t;
    if (n < 3) return fail("usage: at <t_ms> <idx> key=value ...%s", NULL);
    if (parse_nonneg_double(tok[1], &t) || gpu_ref(tok[2], &g)) return -1;
    if (g->nrows == g->caprows) {
        size_t cap = g->caprows ? g->caprows * 2 : 16;
        struct row *r = realloc(g->rows, cap * sizeof *r);
        if (!r) return fail("out of memory%s", NULL);
        g->rows = r;
        g->caprows = cap;
    }
    struct row *r = &g->rows[g->nrows];
    memset(r, 0, sizeof *r);
    r->t_ms = t;
    r->seq = seq;
    for (int i = 3; i < n; i++) {
        char *k, *v;
        int c, rc = 0;
        if (split_kv(tok[i], &k, &v)) return -1;
        for (c = 0; c < C_COUNT; c++)
            if (!strcmp(k, col_names[c])) break;
        switch (c) {
        case C_UTIL_GPU: rc = parse_uint(v, &r->util_gpu); break;
        case C_UTIL_MEM: rc = parse_uint(v, &r->util_mem); break;
        case C_MEM_USED: rc = parse_ull(v, 10, &r->mem_used_mib); break;
        case C_POWER: rc = parse_nonneg_double(v, &r->power_w); break;
        case C_TEMP: rc = parse_int(v, &r->temp_c); break;
        case C_SM_CLOCK: rc = parse_uint(v, &r->sm_clock); break;
        case C_MEM_CLOCK: rc = parse_uint(v, &r->mem_clock); break;
        case C_FAN: rc = parse_uint(v, &r->fan_pct); break;
        case C_PSTATE: rc = parse_uint(v, &r->pstate); break;
        case C_THROTTLE: rc = parse_ull(v, 0, &r->throttle); break;
        default: return fail("unknown reading '%s'", k);
        }
        if (rc) return -1;
        r->set |= 1u << c;
    }
    g->nrows++;
    return 0;
}

static int row_cmp(const void *a, const void *b) {
    const struct row *x = a, *y = b;
    if (x->t_ms != y->t_ms) return x->t_ms < y->t_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* sort rows by time (file order among equal times), carry omitted columns
 * forward, and precompute the energy integral at each row */
static int finish_gpu(struct gpu *g) {
    if (g->nrows == 0) return 0;
    qsort(g->rows, g->nrows, sizeof *g->rows, row_cmp);
    for (size_t i = 1; i < g->nrows; i++) {
        struct row *r = &g->rows[i], *p = &g->rows[i - 1];
        if (!(r->set & (1u << C_UTIL_GPU))) r->util_gpu = p->util_gpu;
        if (!(r->set & (1u << C_UTIL_MEM))) r->util_mem = p->util_mem;
        if (!(r->set & (1u << C_MEM_USED))) r->mem_used_mib = p->mem_used_mib;
        if (!(r->set & (1u << C_POWER))) r->power_w = p->power_w;
        if (!(r->set & (1u << C_TEMP))) r->temp_c = p->temp_c;
        if (!(r->set & (1u << C_SM_CLOCK))) r->sm_clock = p->sm_clock;
        if (!(r->set & (1u << C_MEM_CLOCK))) r->mem_clock = p->mem_clock;
        if (!(r->set & (1u << C_FAN))) r->fan_pct = p->fan_pct;
        if (!(r->set & (1u << C_PSTATE))) r->pstate = p->pstate;
        if (!(r->set & (1u << C_THROTTLE))) r->throttle = p->throttle;
    }
    g->cum_mj = malloc(g->nrows * sizeof *g->cum_mj);
    if (!g->cum_mj) return fail("out of memory%s", NULL);
    /* power before the first row is the first row's */
    g->cum_mj[0] = g->rows[0].power_w * g->rows[0].t_ms;
    for (size_t i = 1; i < g->nrows; i++)
        g->cum_mj[i] = g->cum_mj[i - 1] + g->rows[i - 1].power_w * (g->rows[i].t_ms - g->rows[i - 1].t_ms);
    return 0;
}

static void reset_state(void) {
    for (unsigned i = 0; i < MAX_GPUS; i++) {
        free(gpus[i].rows);
        free(gpus[i].cum_mj);
        memset(&gpus[i], 0, sizeof gpus[i]);
        gpus[i].fail_after = -1;
    }
    ngpus = 0;
}

/* 0: ok; NVML_ERROR_LIBRARY_NOT_FOUND: no trace; NVML_ERROR_UNKNOWN: bad trace
 * (one line already printed to stderr) */
static nvmlReturn_t load_trace(void) {
    const char *path = getenv("FAKE_NVML_TRACE");
    if (!path || !*path) return NVML_ERROR_LIBRARY_NOT_FOUND;
    FILE *f = fopen(path, "r");
    if (!f) return NVML_ERROR_LIBRARY_NOT_FOUND;
    reset_state();
    trace_line = 0;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    char *tok[64];
    int n;
    while (getline(&line, &cap, f) >= 0) {
        trace_line++;
        if (tokenize(line, tok, 64, &n)) { rc = -1; break; }
        if (n == 0) continue;
        if (!strcmp(tok[0], "gpu")) rc = d_gpu(tok, n);
        else if (!strcmp(tok[0], "notsupported")) rc = d_notsupported(tok, n);
        else if (!strcmp(tok[0], "fail_after")) rc = d_fail_after(tok, n);
        else if (!strcmp(tok[0], "energy_update_ms")) rc = d_energy_update(tok, n);
        else if (!strcmp(tok[0], "process")) rc = d_process(tok, n);
        else if (!strcmp(tok[0], "at")) rc = d_at(tok, n, (long)trace_line);
        else rc = fail("unknown directive '%s'", tok[0]);
        if (rc) break;
    }
    int read_error = !rc && ferror(f);
    free(line);
    fclose(f);
    if (read_error) {
        reset_state();
        return NVML_ERROR_LIBRARY_NOT_FOUND;
    }
    if (!rc) {
        /* gpus must be 0..n-1 */
        unsigned n_decl = 0;
        for (unsigned i = 0; i < MAX_GPUS; i++) n_decl += gpus[i].declared;
        for (unsigned i = 0; i < MAX_GPUS && !rc; i++) {
            if (gpus[i].declared && i >= n_decl) {
                trace_line = gpus[i].decl_line;
                rc = fail("gpu indices must be 0..n-1 without gaps%s", NULL);
            }
        }
        for (unsigned i = 0; i < n_decl && !rc; i++) {
            trace_line = gpus[i].decl_line;
            rc = finish_gpu(&gpus[i]);
        }
        ngpus = n_decl;
    }
    if (rc) {
        fprintf(stderr, "fake_nvml: %s:%d: %s\n", path, trace_line, errbuf);
        fflush(stderr);
        reset_state();
        return NVML_ERROR_UNKNOWN;
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t read_t0(void) {
    const char *s = getenv("FAKE_NVML_T0_NS");
    if (!s || !*s) {
        t0_ns = mono_ns();
        return NVML_SUCCESS;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0') {
        fprintf(stderr, "fake_nvml: FAKE_NVML_T0_NS: not an integer: '%s'\n", s);
        fflush(stderr);
        return NVML_ERROR_UNKNOWN;
    }
    t0_ns = v;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ readings */

/* the row in force at t: the last with t_ms <= t, else the first; NULL if none */
static const struct row *row_at(const struct gpu *g, double t) {
    if (g->nrows == 0) return NULL;
    size_t lo = 0, hi = g->nrows; /* find the first row with t_ms > t */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g->rows[mid].t_ms <= t) lo = mid + 1;
        else hi = mid;
    }
    return &g->rows[lo ? lo - 1 : 0];
}

static const struct row zero_row;

static const struct row *current(const struct gpu *g) {
    const struct row *r = row_at(g, now_ms());
    return r ? r : &zero_row;
}

/* integral of power_w over [0, t] in mJ (W * ms) */
static double energy_mj(const struct gpu *g, double t) {
    if (g->nrows == 0 || t <= 0) return 0.0;
    const struct row *r = row_at(g, t);
    size_t i = (size_t)(r - g->rows);
    if (t < r->t_ms) return r->power_w * t; /* before the first row */
    return g->cum_mj[i] + r->power_w * (t - r->t_ms);
}

static unsigned long long energy_counter(const struct gpu *g) {
    double t = now_ms();
    if (t < 0) t = 0;
    if (g->energy_update_ms > 0) {
        double u = (double)g->energy_update_ms;
        t = floor_d(t / u) * u;
    }
    return g->energy_offset_mj + (unsigned long long)floor_d(energy_mj(g, t));
}

/* ------------------------------------------------------------------ call plumbing */

#define LOCK() pthread_mutex_lock(&lock)
#define UNLOCK() pthread_mutex_unlock(&lock)

/* Validate the handle and count one device-level call.  On success *gp is the
 * gpu; otherwise the NVML error to return. */
static nvmlReturn_t enter_dev(nvmlDevice_t device, struct gpu **gp) {
    if (refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (device < &handles[0] || device >= &handles[MAX_GPUS]) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned idx = (unsigned)(device - &handles[0]);
    if (idx >= ngpus) return NVML_ERROR_INVALID_ARGUMENT;
    struct gpu *g = &gpus[idx];
    if (g->fail_after >= 0 && g->calls >= (unsigned long)g->fail_after) return NVML_ERROR_GPU_IS_LOST;
    g->calls++;
    *gp = g;
    return NVML_SUCCESS;
}

static int lost(const struct gpu *g) { return g->fail_after >= 0 && g->calls >= (unsigned long)g->fail_after; }

#define NS(g, m) ((g)->notsupported & (1u << (m)))

/* Boilerplate for a device call that writes one value: lock, validate,
 * check `notsupported`, NULL-check the output, run BODY. */
#define DEVICE_CALL(device, metric, outp, BODY)                    \
    do {                                                           \
        struct gpu *g;                                             \
        nvmlReturn_t rc_;                                          \
        LOCK();                                                    \
        rc_ = enter_dev(device, &g);                               \
        if (rc_ == NVML_SUCCESS) {                                 \
            if ((metric) >= 0 && NS(g, (metric))) {                \
                rc_ = NVML_ERROR_NOT_SUPPORTED;                    \
            } else if ((outp) == NULL) {                           \
                rc_ = NVML_ERROR_INVALID_ARGUMENT;                 \
            } else {                                               \
                BODY                                               \
            }                                                      \
        }                                                          \
        UNLOCK();                                                  \
        return rc_;                                                \
    } while (0)

#define NO_METRIC (-1)

/* ------------------------------------------------------------------ init / system */

static nvmlReturn_t do_init(void) {
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    if (!loaded) {
        rc = load_trace();
        if (rc == NVML_SUCCESS) rc = read_t0();
        if (rc == NVML_SUCCESS) loaded = 1;
        else reset_state();
    }
    if (rc == NVML_SUCCESS) refcount++;
    UNLOCK();
    return rc;
}

nvmlReturn_t nvmlInit(void) { return do_init(); }
nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init();
}

nvmlReturn_t nvmlShutdown(void) {
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    if (refcount == 0) rc = NVML_ERROR_UNINITIALIZED;
    else refcount--;
    UNLOCK();
    return rc;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt Request Issue";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    case 17: return "The operating system has blocked the request.";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    case 19: return "In use by another client";
    case 20: return "Insufficient Memory";
    case 21: return "No data";
    case 25: return "Argument version mismatch";
    case 26: return "Deprecated";
    case 999: return "Unknown Error";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t copy_str(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    size_t n = strlen(src);
    if ((size_t)length < n + 1) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, n + 1);
    return NVML_SUCCESS;
}

static nvmlReturn_t system_str(char *buf, unsigned int length, const char *s) {
    nvmlReturn_t rc;
    LOCK();
    rc = refcount ? copy_str(buf, length, s) : NVML_ERROR_UNINITIALIZED;
    UNLOCK();
    return rc;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    return system_str(version, length, FAKE_DRIVER_VERSION);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    return system_str(version, length, FAKE_NVML_VERSION);
}

static nvmlReturn_t cuda_version(int *v) {
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    if (!refcount) rc = NVML_ERROR_UNINITIALIZED;
    else if (!v) rc = NVML_ERROR_INVALID_ARGUMENT;
    else *v = FAKE_CUDA_DRIVER_VERSION;
    UNLOCK();
    return rc;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) { return cuda_version(cudaDriverVersion); }
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) { return cuda_version(cudaDriverVersion); }

/* ------------------------------------------------------------------ device lookup */

static nvmlReturn_t get_count(unsigned int *count) {
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    if (!refcount) rc = NVML_ERROR_UNINITIALIZED;
    else if (!count) rc = NVML_ERROR_INVALID_ARGUMENT;
    else *count = ngpus;
    UNLOCK();
    return rc;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) { return get_count(deviceCount); }
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) { return get_count(deviceCount); }

/* handle lookups do not count as device-level calls, but fail on a lost gpu */
static nvmlReturn_t by_index(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t rc = NVML_SUCCESS;
    LOCK();
    if (!refcount) rc = NVML_ERROR_UNINITIALIZED;
    else if (!device || index >= ngpus) rc = NVML_ERROR_INVALID_ARGUMENT;
    else if (lost(&gpus[index])) rc = NVML_ERROR_GPU_IS_LOST;
    else *device = &handles[index];
    UNLOCK();
    return rc;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) { return by_index(index, device); }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) { return by_index(index, device); }

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    nvmlReturn_t rc = NVML_ERROR_NOT_FOUND;
    LOCK();
    if (!refcount) rc = NVML_ERROR_UNINITIALIZED;
    else if (!uuid || !device) rc = NVML_ERROR_INVALID_ARGUMENT;
    else {
        for (unsigned i = 0; i < ngpus; i++) {
            if (!strcmp(gpus[i].uuid, uuid)) {
                if (lost(&gpus[i])) rc = NVML_ERROR_GPU_IS_LOST;
                else {
                    *device = &handles[i];
                    rc = NVML_SUCCESS;
                }
                break;
            }
        }
    }
    UNLOCK();
    return rc;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    DEVICE_CALL(device, NO_METRIC, index, { *index = g->index; });
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEVICE_CALL(device, NO_METRIC, name, { rc_ = copy_str(name, length, g->name); });
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEVICE_CALL(device, NO_METRIC, uuid, { rc_ = copy_str(uuid, length, g->uuid); });
}

/* ------------------------------------------------------------------ memory / utilization */

static void mem_values(const struct gpu *g, unsigned long long *total, unsigned long long *used,
                       unsigned long long *free_) {
    const struct row *r = current(g);
    *total = g->memory_total_mib * 1048576ull;
    *used = r->mem_used_mib * 1048576ull;
    *free_ = *used > *total ? 0 : *total - *used;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    DEVICE_CALL(device, M_MEMORY, memory, { mem_values(g, &memory->total, &memory->used, &memory->free); });
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    DEVICE_CALL(device, M_MEMORY, memory, {
        if (memory->version != NVML_MEMORY_V2_VERSION) {
            rc_ = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        } else {
            mem_values(g, &memory->total, &memory->used, &memory->free);
            memory->reserved = 0;
        }
    });
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    DEVICE_CALL(device, M_UTILIZATION, utilization, {
        const struct row *r = current(g);
        utilization->gpu = r->util_gpu;
        utilization->memory = r->util_mem;
    });
}

nvmlReturn_t nvmlDeviceGetMemoryBusWidth(nvmlDevice_t device, unsigned int *busWidth) {
    DEVICE_CALL(device, M_BUS_WIDTH, busWidth, { *busWidth = g->bus_width; });
}

/* ------------------------------------------------------------------ fans / temperature */

nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t device, unsigned int *numFans) {
    DEVICE_CALL(device, M_FAN, numFans, {
        if (g->fans == 0) rc_ = NVML_ERROR_NOT_SUPPORTED;
        else *numFans = g->fans;
    });
}

nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    DEVICE_CALL(device, M_FAN, speed, {
        if (g->fans == 0) rc_ = NVML_ERROR_NOT_SUPPORTED;
        else *speed = current(g)->fan_pct;
    });
}

nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t device, unsigned int fan, unsigned int *speed) {
    DEVICE_CALL(device, M_FAN, speed, {
        if (g->fans == 0) rc_ = NVML_ERROR_NOT_SUPPORTED;
        else if (fan >= g->fans) rc_ = NVML_ERROR_INVALID_ARGUMENT;
        else *speed = current(g)->fan_pct;
    });
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, unsigned int sensorType, unsigned int *temp) {
    DEVICE_CALL(device, M_TEMPERATURE, temp, {
        if (sensorType != NVML_TEMPERATURE_GPU) rc_ = NVML_ERROR_INVALID_ARGUMENT;
        else *temp = (unsigned)current(g)->temp_c;
    });
}

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temperature) {
    DEVICE_CALL(device, M_TEMPERATURE, temperature, {
        if (temperature->version != NVML_TEMPERATURE_V1_VERSION) rc_ = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        else if (temperature->sensorType != NVML_TEMPERATURE_GPU) rc_ = NVML_ERROR_INVALID_ARGUMENT;
        else temperature->temperature = current(g)->temp_c;
    });
}

/* ------------------------------------------------------------------ power / energy */

static unsigned power_mw(const struct gpu *g) { return (unsigned)round_u(current(g)->power_w * 1000.0); }
static unsigned limit_mw(const struct gpu *g) { return (unsigned)round_u(g->power_limit_w * 1000.0); }

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEVICE_CALL(device, M_POWER, power, { *power = power_mw(g); });
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    DEVICE_CALL(device, M_ENERGY, energy, { *energy = energy_counter(g); });
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_CALL(device, M_POWER_LIMIT, limit, { *limit = limit_mw(g); });
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_CALL(device, M_POWER_LIMIT, limit, { *limit = limit_mw(g); });
}

nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *limit) {
    DEVICE_CALL(device, M_POWER_LIMIT, limit, { *limit = limit_mw(g); });
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values) {
    DEVICE_CALL(device, NO_METRIC, values, {
        if (valuesCount < 0) {
            rc_ = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long long us = (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
            for (int i = 0; i < valuesCount; i++) {
                nvmlFieldValue_t *v = &values[i];
                v->timestamp = us;
                v->latencyUsec = 0;
                memset(&v->value, 0, sizeof v->value);
                if (v->fieldId == NVML_FI_DEV_POWER_INSTANT && !NS(g, M_POWER_INSTANT)) {
                    v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
                    v->value.uiVal = power_mw(g);
                    v->nvmlReturn = NVML_SUCCESS;
                } else {
                    v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
                    v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
                }
            }
        }
    });
}

/* ------------------------------------------------------------------ clocks / pstate / throttle */

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, unsigned int type, unsigned int *clock) {
    DEVICE_CALL(device, M_CLOCKS, clock, {
        const struct row *r = current(g);
        if (type == NVML_CLOCK_GRAPHICS || type == NVML_CLOCK_SM) *clock = r->sm_clock;
        else if (type == NVML_CLOCK_MEM) *clock = r->mem_clock;
        else if (type == NVML_CLOCK_VIDEO) rc_ = NVML_ERROR_NOT_SUPPORTED;
        else rc_ = NVML_ERROR_INVALID_ARGUMENT;
    });
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, unsigned int type, unsigned int *clock) {
    DEVICE_CALL(device, M_MAX_CLOCKS, clock, {
        if (type == NVML_CLOCK_GRAPHICS || type == NVML_CLOCK_SM) *clock = g->max_sm_clock;
        else if (type == NVML_CLOCK_MEM) *clock = g->max_mem_clock;
        else if (type == NVML_CLOCK_VIDEO) rc_ = NVML_ERROR_NOT_SUPPORTED;
        else rc_ = NVML_ERROR_INVALID_ARGUMENT;
    });
}

nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, unsigned int *pState) {
    DEVICE_CALL(device, M_PSTATE, pState, { *pState = current(g)->pstate; });
}

nvmlReturn_t nvmlDeviceGetPowerState(nvmlDevice_t device, unsigned int *pState) {
    DEVICE_CALL(device, M_PSTATE, pState, { *pState = current(g)->pstate; });
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    DEVICE_CALL(device, M_THROTTLE, reasons, { *reasons = current(g)->throttle; });
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
    DEVICE_CALL(device, M_THROTTLE, reasons, { *reasons = current(g)->throttle; });
}

nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    DEVICE_CALL(device, M_THROTTLE, reasons, { *reasons = FAKE_SUPPORTED_EVENT_REASONS; });
}

nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
    DEVICE_CALL(device, M_THROTTLE, reasons, { *reasons = FAKE_SUPPORTED_EVENT_REASONS; });
}

/* ------------------------------------------------------------------ processes */

/* The size protocol: *infoCount < n (e.g. 0 with infos NULL) -> *infoCount = n
 * and INSUFFICIENT_SIZE (SUCCESS when n == 0); otherwise fill n entries. */
static nvmlReturn_t list_procs(nvmlDevice_t device, unsigned int *infoCount, void *infos, int version,
                               int graphics) {
    struct gpu *g;
    nvmlReturn_t rc;
    LOCK();
    rc = enter_dev(device, &g);
    if (rc == NVML_SUCCESS) {
        unsigned n = graphics ? 0 : g->nprocs;
        if (NS(g, M_PROCESSES)) rc = NVML_ERROR_NOT_SUPPORTED;
        else if (!infoCount) rc = NVML_ERROR_INVALID_ARGUMENT;
        else if (*infoCount < n) {
            *infoCount = n;
            rc = NVML_ERROR_INSUFFICIENT_SIZE;
        } else if (n > 0 && !infos) {
            rc = NVML_ERROR_INVALID_ARGUMENT;
        } else {
            for (unsigned i = 0; i < n; i++) {
                const struct proc *p = &g->procs[i];
                unsigned pid = p->self ? (unsigned)getpid() : p->pid;
                unsigned long long used = p->used_mib * 1048576ull;
                if (version == 1) {
                    nvmlProcessInfo_v1_t *o = &((nvmlProcessInfo_v1_t *)infos)[i];
                    o->pid = pid;
                    o->usedGpuMemory = used;
                } else {
                    nvmlProcessInfo_v2_t *o = &((nvmlProcessInfo_v2_t *)infos)[i];
                    o->pid = pid;
                    o->usedGpuMemory = used;
                    o->gpuInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
                    o->computeInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
                }
            }
            *infoCount = n;
        }
    }
    UNLOCK();
    return rc;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v1_t *i) {
    return list_procs(d, c, i, 1, 0);
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v2_t *i) {
    return list_procs(d, c, i, 2, 0);
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v2_t *i) {
    return list_procs(d, c, i, 3, 0);
}
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v1_t *i) {
    return list_procs(d, c, i, 1, 1);
}
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v2_t *i) {
    return list_procs(d, c, i, 2, 1);
}
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *c, nvmlProcessInfo_v2_t *i) {
    return list_procs(d, c, i, 3, 1);
}
