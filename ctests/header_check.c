/* wcfs.h compiles as strict ISO C11 with -pedantic -Werror. */
#include <wcfs.h>

const char *header_check_version(void);
const char *header_check_version(void) { return wcfs_version(); }
