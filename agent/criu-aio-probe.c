/*
 * criu-aio-probe: the live prober's primitive as a small static program.
 *
 * It answers, one line per request on stdin/stdout, what io_setup(n) does on
 * the kernel it runs on (ring header nr, mapping length, errno) and the host
 * facts that bear on ring sizing. criu-aio drives it through
 * criu_aio_plugin.kernel.agent.AgentKernel (`--kernel agent:CMD`), locally, over
 * ssh, or over a VM's serial port; the protocol is in agent/PROTOCOL.md.
 *
 * Why a C program: the hosts a fleet is profiled on (and the initramfs of the
 * kernel lab) have no Python. Only libc is used; build with `make -C agent`
 * (gcc -static -Os).
 *
 * Facts it rests on (fs/aio.c, since v3.11): io_setup returns the ring's user
 * address as the context id; the ring starts with struct aio_ring whose second
 * u32 is `nr`, the slot count CRIU's restorer compares; the ring is one mapping
 * (`/[aio] (deleted)` in /proc/self/maps) whose length is the ring length.
 * Contexts are charged to fs.aio-nr until destroyed or until the process exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <termios.h>
#include <unistd.h>

#define PROTOCOL 1
#define AGENT_VERSION "1.0"
#define LINE_MAX_LEN 256

/* Contexts created with `setup N keep`, destroyed by `release` (or at exit). */
static unsigned long *kept;
static size_t kept_count, kept_cap;

static void put_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void put_line(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int len;
	size_t off = 0;

	va_start(ap, fmt);
	len = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (len < 0)
		len = 0;
	if ((size_t)len > sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	while (off < (size_t)len) {
		ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			exit(3); /* the host is gone: nothing left to answer */
		off += (size_t)w;
	}
}

/* Read a small /proc or /sys file into buf, trailing newline removed. */
static int read_small(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

static long read_number(const char *path)
{
	char buf[64];
	char *end;
	long v;

	if (read_small(path, buf, sizeof(buf)) < 0)
		return -1;
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || end == buf)
		return -1;
	return v;
}

/*
 * Possible CPUs: count the ids in /sys/devices/system/cpu/possible ("0-63",
 * "0,2-5"); this is num_possible_cpus(), the count the per-CPU floor uses.
 */
static long possible_cpus(void)
{
	char buf[4096];
	char *p = buf;
	long count = 0;

	if (read_small("/sys/devices/system/cpu/possible", buf, sizeof(buf)) < 0)
		return -1;
	while (*p) {
		char *end;
		long lo = strtol(p, &end, 10), hi = lo;

		if (end == p)
			return -1;
		p = end;
		if (*p == '-') {
			hi = strtol(p + 1, &end, 10);
			if (end == p + 1)
				return -1;
			p = end;
		}
		count += hi - lo + 1;
		if (*p == ',')
			p++;
		else if (*p)
			return -1;
	}
	return count;
}

/* Replace anything that would break the key=value grammar. */
static void sanitize(char *s)
{
	for (; *s; s++)
		if (*s <= ' ' || *s == '=' || *s > '~')
			*s = '_';
}

static void do_facts(void)
{
	struct utsname u;
	char boot_id[64] = "unknown";

	if (uname(&u) < 0) {
		put_line("error errno=%d uname failed", errno);
		return;
	}
	if (read_small("/proc/sys/kernel/random/boot_id", boot_id, sizeof(boot_id)) < 0)
		strcpy(boot_id, "unknown");
	sanitize(u.release);
	sanitize(u.machine);
	sanitize(u.nodename);
	sanitize(boot_id);
	put_line("facts release=%s machine=%s hostname=%s boot_id=%s page_size=%lu "
		 "possible_cpus=%ld aio_nr=%ld aio_max_nr=%ld kept=%zu",
		 u.release, u.machine, u.nodename, boot_id, getauxval(AT_PAGESZ), possible_cpus(),
		 read_number("/proc/sys/fs/aio-nr"), read_number("/proc/sys/fs/aio-max-nr"),
		 kept_count);
}

/* Length of the mapping that starts at addr, from /proc/self/maps; 0 if none. */
static unsigned long mapping_len(unsigned long addr)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	unsigned long len = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo == addr) {
			len = hi - lo;
			break;
		}
	}
	fclose(f);
	return len;
}

static int destroy(unsigned long ctx)
{
	return syscall(SYS_io_destroy, ctx) < 0 ? errno : 0;
}

static void do_setup(const char *args)
{
	char mode[16] = "keep";
	unsigned long nr_req, ctx = 0, ring_len;
	uint32_t nr;
	int n, err;

	n = sscanf(args, "%lu %15s", &nr_req, mode);
	if (n < 1 || (strcmp(mode, "keep") && strcmp(mode, "destroy")) ||
	    nr_req > UINT32_MAX) {
		put_line("error errno=%d usage: setup N [keep|destroy]", EINVAL);
		return;
	}
	if (syscall(SYS_io_setup, (unsigned)nr_req, &ctx) < 0) {
		err = errno;
		put_line("ring nr_req=%lu errno=%d ring_len=0 nr=0 pages=0 kept=%zu", nr_req, err,
			 kept_count);
		return;
	}
	/* struct aio_ring { unsigned id; unsigned nr; ... } at the context address. */
	memcpy(&nr, (const char *)ctx + 4, sizeof(nr));
	ring_len = mapping_len(ctx);
	err = 0;
	if (!strcmp(mode, "destroy")) {
		err = destroy(ctx);
	} else {
		if (kept_count == kept_cap) {
			size_t cap = kept_cap ? kept_cap * 2 : 64;
			unsigned long *grown = realloc(kept, cap * sizeof(*kept));

			if (!grown) {
				destroy(ctx);
				put_line("error errno=%d out of memory keeping contexts", ENOMEM);
				return;
			}
			kept = grown;
			kept_cap = cap;
		}
		kept[kept_count++] = ctx;
	}
	if (ring_len == 0) {
		/* /proc not mounted or the ring not found: the answer would be a guess. */
		put_line("error errno=%d ring at 0x%lx not found in /proc/self/maps", ENOENT, ctx);
		return;
	}
	put_line("ring nr_req=%lu errno=0 ring_len=%lu nr=%" PRIu32 " pages=%lu kept=%zu%s", nr_req,
		 ring_len, nr, ring_len / getauxval(AT_PAGESZ), kept_count,
		 err ? " destroy_failed=1" : "");
}

static int idle_seconds;

/*
 * io_destroy waits for an RCU grace period per context (about 32 ms each on
 * the development host), while the contexts a process holds when its mm goes
 * away are torn down together (fs/aio.c exit_aio(): one wait for all). So
 * `release` of many contexts re-executes this program on the same stdin and
 * stdout: exec drops the old mm, the new image reports the count and goes on.
 */
static void release_by_exec(size_t count)
{
	char count_s[32], idle_s[32];
	char *args[] = { "criu-aio-probe", "--released", count_s, "--idle-timeout", idle_s, NULL };

	snprintf(count_s, sizeof(count_s), "%zu", count);
	snprintf(idle_s, sizeof(idle_s), "%d", idle_seconds);
	execv("/proc/self/exe", args);
	/* /proc missing or exec refused: fall back to destroying one by one. */
}

static void do_release(void)
{
	size_t released = kept_count;
	int first_err = 0;

	if (kept_count > 2)
		release_by_exec(kept_count);

	while (kept_count > 0) {
		int err = destroy(kept[--kept_count]);

		if (err && !first_err)
			first_err = err;
	}
	put_line("released count=%zu errno=%d", released, first_err);
}

/* Returns 0 to go on, 1 to quit. */
static int handle(char *line)
{
	char *args;

	while (*line == ' ' || *line == '\t')
		line++;
	args = line + strcspn(line, " \t");
	if (*args)
		*args++ = '\0';
	if (!*line)
		return 0; /* blank lines are ignored: handy on a serial console */
	if (!strcmp(line, "facts"))
		do_facts();
	else if (!strcmp(line, "setup"))
		do_setup(args);
	else if (!strcmp(line, "release"))
		do_release();
	else if (!strcmp(line, "ping"))
		put_line("pong");
	else if (!strcmp(line, "hello"))
		put_line("criu-aio-probe protocol=%d version=%s", PROTOCOL, AGENT_VERSION);
	else if (!strcmp(line, "quit")) {
		put_line("bye");
		return 1;
	} else {
		sanitize(line);
		put_line("error errno=%d unknown request %.64s", EINVAL, line);
	}
	return 0;
}

/*
 * On a serial console stdin is a tty in cooked mode: it would echo our
 * requests back and turn "\n" into "\r\n". Raw mode makes it a plain pipe.
 */
static void make_raw_if_tty(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &t) < 0)
		return;
	cfmakeraw(&t);
	tcsetattr(STDIN_FILENO, TCSANOW, &t);
}

static void usage(FILE *to)
{
	fprintf(to, "usage: criu-aio-probe [--idle-timeout SECONDS] [--version]\n"
		    "Answers AIO ring-sizing requests on stdin/stdout (agent/PROTOCOL.md).\n"
		    "--idle-timeout: exit when no request came for that long (0: never).\n");
}

int main(int argc, char **argv)
{
	char line[LINE_MAX_LEN + 1];
	size_t len = 0;
	int discarding = 0, idle_ms = -1;
	long released = -1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--idle-timeout") && i + 1 < argc) {
			long s = strtol(argv[++i], NULL, 10);

			idle_seconds = s > 0 && s < 86400 ? (int)s : 0;
			idle_ms = idle_seconds ? idle_seconds * 1000 : -1;
		} else if (!strcmp(argv[i], "--released") && i + 1 < argc) {
			/* internal: we are the image `release` exec'd (see release_by_exec) */
			released = strtol(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--version")) {
			printf("criu-aio-probe %s protocol %d\n", AGENT_VERSION, PROTOCOL);
			return 0;
		} else if (!strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	make_raw_if_tty();
	if (released >= 0)
		put_line("released count=%ld errno=0", released);
	else
		put_line("criu-aio-probe protocol=%d version=%s", PROTOCOL, AGENT_VERSION);

	for (;;) {
		struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
		char c;
		ssize_t r;
		int p = poll(&pfd, 1, idle_ms);

		if (p < 0 && errno == EINTR)
			continue;
		if (p == 0)
			return 4; /* idle: the host forgot us; exit so a VM can power off */
		r = read(STDIN_FILENO, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0; /* EOF: contexts go away with the process */
		if (c == '\r')
			continue;
		if (c != '\n') {
			if (len < LINE_MAX_LEN)
				line[len++] = c;
			else
				discarding = 1;
			continue;
		}
		line[len] = '\0';
		len = 0;
		if (discarding) {
			discarding = 0;
			put_line("error errno=%d request longer than %d bytes", E2BIG, LINE_MAX_LEN);
			continue;
		}
		if (handle(line))
			return 0;
	}
}
