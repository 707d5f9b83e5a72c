#include <criterion/criterion.h>
#include <string.h>

#include "storage/crc32c.h"

Test(crc32c, known_vectors)
{
    /* RFC 3720 B.4 check value and the classic "123456789" check. */
    cr_expect_eq(spool_crc32c(0, "123456789", 9), 0xE3069283u);
    unsigned char zeros[32] = {0};
    cr_expect_eq(spool_crc32c(0, zeros, 32), 0x8A9136AAu);
}

Test(crc32c, chaining_equals_one_shot)
{
    const char *s = "the quick brown fox jumps over the lazy dog, twice over";
    size_t n = strlen(s);
    for (size_t cut = 0; cut <= n; cut++) {
        uint32_t a = spool_crc32c(spool_crc32c(0, s, cut), s + cut, n - cut);
        cr_assert_eq(a, spool_crc32c(0, s, n), "cut at %zu", cut);
    }
}
