/*
 * holder: a process (tree) that holds Linux AIO rings for criu-aio's tests.
 *
 * usage: holder REPORT_DIR DATA_FILE [-r N[:P]]... [-c CHILDREN] [-g GRANDCHILDREN]
 *
 *   -r N[:P]  one ring: io_setup(N), then P reads submitted and left unreaped,
 *             so the ring holds P completed events (head != tail)
 *   -c K      the root forks K children holding the same rings
 *   -g G      each child forks G children holding the same rings
 *
 * DATA_FILE must exist and hold at least 1 MiB of the pattern byte(i) = i % 251;
 * pending reads take 512-byte blocks from it, the SIGUSR2 exercise writes past
 * 1 MiB. The first process forks, the fork detaches (setsid, stdio on /dev/null)
 * and builds the tree; the first process exits 0 once every process holds its
 * rings and wrote its first report (1 with a message on stderr on failure), so
 * CRIU can dump the tree without --shell-job.
 *
 * Each process writes REPORT_DIR/<name>.json (name: root, c0, c0g1, ...),
 * atomically (temp file + rename):
 *   at start, on SIGUSR1: pid, ppid, and per ring its address (the
 *     aio_context_t), requested n, header id/nr/head/tail/magic/header_length
 *     read from the ring itself, ring_len from /proc/self/maps ("/[aio] (deleted)"),
 *     and whether io_getevents accepts the context;
 *   on SIGUSR2 the same plus "exercise": reap the pending events (checking
 *     their aio_data, result and the bytes read), then io_submit a write and a
 *     read-back and io_getevents each.
 * SIGTERM/SIGINT end the process. Signals are taken with sigwaitinfo, so no
 * work happens in a signal handler. Syscalls go through syscall(2): no libaio.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/aio_abi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RINGS 64
#define BLOCK 512
#define PATTERN_BYTES (1 << 20)
#define TAG_BASE 0xa10ca10c00000000ULL

/* The ring header the kernel maps at the context's address (fs/aio.c, struct aio_ring). */
struct ring_header {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
};

struct ring {
	aio_context_t ctx;
	unsigned requested;
	unsigned pending;
	unsigned char *bufs; /* pending * BLOCK bytes, filled by the pending reads */
	int setup_errno;
};

static struct ring rings[MAX_RINGS];
static int n_rings;
static int data_fd = -1;
static const char *report_dir;
static char name[64] = "root";
static unsigned long report_seq;

static long sys_io_setup(unsigned n, aio_context_t *ctx) { return syscall(SYS_io_setup, n, ctx); }
static long sys_io_submit(aio_context_t ctx, long n, struct iocb **iocbs)
{
	return syscall(SYS_io_submit, ctx, n, iocbs);
}
static long sys_io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev, struct timespec *ts)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, ts);
}

static unsigned char pattern_at(off_t off) { return (unsigned char)(off % 251); }

static uint64_t tag(int ring, unsigned k) { return TAG_BASE | ((uint64_t)ring << 16) | k; }

static void die(int err_fd, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (len > (int)sizeof(msg) - 1)
		len = sizeof(msg) - 1;
	if (err_fd >= 0 && write(err_fd, msg, len) < 0)
		_exit(3);
	_exit(1);
}

/* Length of the mapping starting at addr named "/[aio] (deleted)", or 0. */
static unsigned long maps_ring_len(unsigned long addr)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned long start, end, len = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx", &start, &end) != 2 || start != addr)
			continue;
		if (strstr(line, "/[aio]"))
			len = end - start;
		break;
	}
	fclose(f);
	return len;
}

static int wait_completions(int i, unsigned want)
{
	volatile struct ring_header *h = (volatile struct ring_header *)rings[i].ctx;
	struct timespec nap = {0, 1000000};
	for (int tries = 0; tries < 5000; tries++) {
		unsigned ready = (h->tail + h->nr - h->head) % h->nr;
		if (ready >= want)
			return 0;
		nanosleep(&nap, NULL);
	}
	return -1;
}

static void setup_rings(int err_fd)
{
	for (int i = 0; i < n_rings; i++) {
		struct ring *r = &rings[i];
		r->ctx = 0;
		/* EAGAIN: fs.aio-max-nr is full. Tests running beside us (probes, budget
		 * tests) hold contexts for a while; give them 10 s to let go. */
		struct timespec nap = {0, 20000000};
		int tries = 0;
		while (sys_io_setup(r->requested, &r->ctx) < 0) {
			if (errno != EAGAIN || ++tries > 500)
				die(err_fd, "%s: io_setup(%u) for ring %d: %s\n", name, r->requested, i,
				    strerror(errno));
			nanosleep(&nap, NULL);
		}
		if (!r->pending)
			continue;
		r->bufs = calloc(r->pending, BLOCK);
		if (!r->bufs)
			die(err_fd, "%s: out of memory\n", name);
		for (unsigned k = 0; k < r->pending; k++) {
			struct iocb cb;
			struct iocb *list[1] = {&cb};
			memset(&cb, 0, sizeof(cb));
			cb.aio_data = tag(i, k);
			cb.aio_lio_opcode = IOCB_CMD_PREAD;
			cb.aio_fildes = data_fd;
			cb.aio_buf = (uint64_t)(uintptr_t)(r->bufs + (size_t)k * BLOCK);
			cb.aio_nbytes = BLOCK;
			cb.aio_offset = (int64_t)((i * 64 + k) % (PATTERN_BYTES / BLOCK)) * BLOCK;
			if (sys_io_submit(r->ctx, 1, list) != 1)
				die(err_fd, "%s: io_submit on ring %d (n=%u, event %u): %s\n", name, i,
				    r->requested, k, strerror(errno));
		}
		if (wait_completions(i, r->pending) < 0)
			die(err_fd, "%s: ring %d: %u submitted reads did not complete\n", name, i, r->pending);
	}
}

struct exercise {
	long reaped;
	int reap_errno;
	int events_ok;
	int data_ok;
	int write_ok;
	int read_ok;
	int roundtrip_ok;
	int submit_errno;
};

static int one_roundtrip(struct ring *r, int i, int opcode, unsigned char *buf, off_t off, struct exercise *x)
{
	struct iocb cb;
	struct iocb *list[1] = {&cb};
	struct io_event ev;
	struct timespec ts = {5, 0};
	memset(&cb, 0, sizeof(cb));
	cb.aio_data = tag(i, 0xffff) ^ (uint64_t)opcode;
	cb.aio_lio_opcode = opcode;
	cb.aio_fildes = data_fd;
	cb.aio_buf = (uint64_t)(uintptr_t)buf;
	cb.aio_nbytes = BLOCK;
	cb.aio_offset = off;
	if (sys_io_submit(r->ctx, 1, list) != 1) {
		x->submit_errno = errno;
		return 0;
	}
	if (sys_io_getevents(r->ctx, 1, 1, &ev, &ts) != 1) {
		x->submit_errno = errno;
		return 0;
	}
	return ev.data == cb.aio_data && ev.obj == (uint64_t)(uintptr_t)&cb && ev.res == BLOCK;
}

static void exercise_ring(int i, struct exercise *x)
{
	struct ring *r = &rings[i];
	struct io_event ev[MAX_RINGS * 4];
	struct timespec ts = {5, 0};
	unsigned char out[BLOCK], in[BLOCK];
	off_t off = PATTERN_BYTES + (off_t)(getpid() % 512) * MAX_RINGS * BLOCK + (off_t)i * BLOCK;
	memset(x, 0, sizeof(*x));
	x->events_ok = 1;
	x->data_ok = 1;
	if (r->pending) {
		long got = sys_io_getevents(r->ctx, r->pending, r->pending, ev, &ts);
		if (got < 0) {
			x->reap_errno = errno;
			got = 0;
		}
		x->reaped = got;
		if ((unsigned)got != r->pending)
			x->events_ok = x->data_ok = 0;
		for (long e = 0; e < got; e++) {
			uint64_t k = ev[e].data & 0xffff;
			if ((ev[e].data & ~0xffffffULL) != TAG_BASE || ((ev[e].data >> 16) & 0xff) != (uint64_t)i ||
			    k >= r->pending || ev[e].res != BLOCK) {
				x->events_ok = 0;
				continue;
			}
			off_t src = (off_t)((i * 64 + k) % (PATTERN_BYTES / BLOCK)) * BLOCK;
			for (int b = 0; b < BLOCK; b++)
				if (r->bufs[k * BLOCK + b] != pattern_at(src + b))
					x->data_ok = 0;
		}
		r->pending = 0; /* reaped: later reports expect an empty ring */
	}
	for (int b = 0; b < BLOCK; b++)
		out[b] = (unsigned char)(b * 7 + i + getpid());
	memset(in, 0, sizeof(in));
	x->write_ok = one_roundtrip(r, i, IOCB_CMD_PWRITE, out, off, x);
	x->read_ok = x->write_ok && one_roundtrip(r, i, IOCB_CMD_PREAD, in, off, x);
	x->roundtrip_ok = x->read_ok && memcmp(in, out, BLOCK) == 0;
}

static void write_report(const char *event, int exercise)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof(path), "%s/%s.json", report_dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.json.%d.tmp", report_dir, name, getpid());
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	report_seq++;
	fprintf(f, "{\"name\": \"%s\", \"pid\": %d, \"ppid\": %d, \"sid\": %d, \"event\": \"%s\", \"seq\": %lu,\n",
		name, getpid(), getppid(), getsid(0), event, report_seq);
	fprintf(f, " \"rings\": [");
	for (int i = 0; i < n_rings; i++) {
		struct ring *r = &rings[i];
		volatile struct ring_header *h = (volatile struct ring_header *)r->ctx;
		struct timespec zero = {0, 0};
		int ok = sys_io_getevents(r->ctx, 0, 0, NULL, &zero) == 0;
		int gerr = ok ? 0 : errno;
		unsigned long len = maps_ring_len((unsigned long)r->ctx);
		fprintf(f,
			"%s\n  {\"index\": %d, \"address\": %llu, \"requested\": %u, \"pending\": %u, "
			"\"ring_len\": %lu, \"getevents_ok\": %s, \"getevents_errno\": %d",
			i ? "," : "", i, (unsigned long long)r->ctx, r->requested, r->pending, len,
			ok ? "true" : "false", gerr);
		if (len) /* only read the header while the mapping is there */
			fprintf(f,
				", \"id\": %u, \"nr\": %u, \"head\": %u, \"tail\": %u, \"magic\": %u, "
				"\"header_length\": %u, \"incompat_features\": %u",
				h->id, h->nr, h->head, h->tail, h->magic, h->header_length, h->incompat_features);
		if (exercise) {
			struct exercise x;
			exercise_ring(i, &x);
			fprintf(f,
				", \"exercise\": {\"reaped\": %ld, \"reap_errno\": %d, \"events_ok\": %s, "
				"\"data_ok\": %s, \"write_ok\": %s, \"read_ok\": %s, \"roundtrip_ok\": %s, "
				"\"submit_errno\": %d, \"head_after\": %u, \"tail_after\": %u}",
				x.reaped, x.reap_errno, x.events_ok ? "true" : "false", x.data_ok ? "true" : "false",
				x.write_ok ? "true" : "false", x.read_ok ? "true" : "false",
				x.roundtrip_ok ? "true" : "false", x.submit_errno, len ? h->head : 0, len ? h->tail : 0);
		}
		fprintf(f, "}");
	}
	fprintf(f, "\n ]}\n");
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		unlink(tmp);
		return;
	}
	fclose(f);
	rename(tmp, path);
}

static void served_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
}

__attribute__((noreturn)) static void serve(sigset_t *set)
{
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(set, &si);
		if (sig < 0)
			continue; /* EINTR, e.g. around a checkpoint */
		if (sig == SIGUSR1)
			write_report("report", 0);
		else if (sig == SIGUSR2)
			write_report("exercise", 1);
		else
			_exit(0);
	}
}

/* Become NAME: set up rings, fork DESCENDANTS, report, tell the parent through ready_fd. */
__attribute__((noreturn)) static void become(int ready_fd, int children, int grandchildren)
{
	char child_name[64];
	setup_rings(ready_fd);
	for (int c = 0; c < children; c++) {
		int p[2];
		char buf[512];
		if (pipe2(p, O_CLOEXEC) < 0)
			die(ready_fd, "%s: pipe: %s\n", name, strerror(errno));
		snprintf(child_name, sizeof(child_name), "%.40s%s%d", strcmp(name, "root") ? name : "",
			 strcmp(name, "root") ? "g" : "c", c);
		pid_t pid = fork();
		if (pid < 0)
			die(ready_fd, "%s: fork: %s\n", name, strerror(errno));
		if (pid == 0) {
			close(p[0]);
			close(ready_fd);
			snprintf(name, sizeof(name), "%s", child_name);
			/* The tree goes away with its root when a test kills only the root. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			/* Children hold rings of their own. A fork gets no AIO contexts, but
			 * it does get copies of the parent's ring mappings (fs/aio.c maps rings
			 * without VM_DONTCOPY), and CRIU dumps every "/[aio]" mapping as a
			 * ring; unmap them so each process holds exactly the rings it made. */
			for (int i = 0; i < n_rings; i++) {
				unsigned long len = maps_ring_len((unsigned long)rings[i].ctx);
				if (len && munmap((void *)rings[i].ctx, len) < 0)
					die(p[1], "%s: munmap of inherited ring: %s\n", name, strerror(errno));
				free(rings[i].bufs);
				rings[i].bufs = NULL;
			}
			become(p[1], grandchildren, 0);
		}
		close(p[1]);
		ssize_t got = read(p[0], buf, sizeof(buf));
		close(p[0]);
		if (got > 0) /* the child failed and said why */
			die(ready_fd, "%.*s", (int)got, buf);
	}
	write_report("ready", 0);
	close(ready_fd); /* EOF without a message: ready */
	sigset_t set;
	served_signals(&set);
	serve(&set);
}

static void usage(void)
{
	fprintf(stderr, "usage: holder REPORT_DIR DATA_FILE [-r N[:PENDING]]... [-c CHILDREN] [-g GRANDCHILDREN]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int children = 0, grandchildren = 0;
	if (argc < 3)
		usage();
	report_dir = argv[1];
	for (int a = 3; a < argc; a++) {
		if (a + 1 >= argc)
			usage();
		if (!strcmp(argv[a], "-r")) {
			unsigned n, p = 0;
			if (n_rings == MAX_RINGS || sscanf(argv[++a], "%u:%u", &n, &p) < 1 || p > 4 * MAX_RINGS)
				usage();
			rings[n_rings].requested = n;
			rings[n_rings].pending = p;
			n_rings++;
		} else if (!strcmp(argv[a], "-c")) {
			children = atoi(argv[++a]);
		} else if (!strcmp(argv[a], "-g")) {
			grandchildren = atoi(argv[++a]);
		} else {
			usage();
		}
	}
	data_fd = open(argv[2], O_RDWR | O_CLOEXEC);
	if (data_fd < 0) {
		fprintf(stderr, "holder: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	/* Signals are only ever taken by sigwaitinfo; block them before any fork. */
	sigset_t set;
	served_signals(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);

	int p[2];
	char buf[512];
	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("holder: pipe");
		return 1;
	}
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		perror("holder: fork");
		return 1;
	}
	if (pid == 0) {
		close(p[0]);
		setsid();
		int null = open("/dev/null", O_RDWR);
		if (null < 0)
			die(p[1], "open /dev/null: %s\n", strerror(errno));
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
		become(p[1], children, grandchildren);
	}
	close(p[1]);
	ssize_t got = read(p[0], buf, sizeof(buf));
	if (got > 0) {
		fprintf(stderr, "holder: %.*s", (int)got, buf);
		kill(pid, SIGKILL); /* its own children die with it (PDEATHSIG) */
		waitpid(pid, NULL, 0);
		return 1;
	}
	return 0;
}
