/*
 * Restore a checkpoint through criu-aio with libcriu (crun, for one, uses it).
 *
 * libcriu spawns its "service binary" as `BINARY swrk <fd>`; pointing it at
 * criu-aio's launcher with criu_set_service_binary() is the whole integration.
 *
 *   make -C examples/libcriu                 (needs libcriu-dev)
 *   sudo examples/libcriu/restore /path/to/images [/usr/local/lib/criu-aio/criu]
 *
 * Prints the restored root's pid, or the error (criu-aio's refusals arrive as
 * a failed restore; libcriu reports the negative errno).
 */
#include <criu/criu.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *binary = argc > 2 ? argv[2] : "/usr/local/lib/criu-aio/criu";
	int dir, pid;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s IMAGES_DIR [CRIU_AIO_LAUNCHER]\n", argv[0]);
		return 2;
	}
	dir = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (dir < 0) {
		perror(argv[1]);
		return 1;
	}
	if (criu_init_opts() < 0) {
		fprintf(stderr, "criu_init_opts failed\n");
		return 1;
	}
	criu_set_service_binary(binary);
	criu_set_images_dir_fd(dir);
	criu_set_log_file("restore.log");
	criu_set_log_level(4);
	pid = criu_restore();
	if (pid < 0) {
		fprintf(stderr, "restore failed: %s (see %s/restore.log; criu-aio logs to syslog)\n",
			strerror(-pid), argv[1]);
		return 1;
	}
	printf("restored, root pid %d\n", pid);
	return 0;
}
