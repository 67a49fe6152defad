/* Links libwcfs from outside the source tree; prints the version and shows
 * that an error comes back as a code and a message. */
#include <errno.h>
#include <stdio.h>
#include <wcfs.h>

int main(void) {
    wcfs_WCFS *wc;
    int rc = wcfs_attach(NULL, &wc);
    if (rc != -EINVAL) {
        fprintf(stderr, "attach(NULL) = %d\n", rc);
        return 1;
    }
    printf("libwcfs %s; attach(NULL): %s\n", wcfs_version(), wcfs_last_error());
    return 0;
}
