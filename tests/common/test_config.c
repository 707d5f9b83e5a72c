#include <criterion/criterion.h>
#include <stdlib.h>

#include "common/config.h"

static uint64_t port_ms;
static uint64_t size;
static const char *name;
static bool flag;
static const struct spool_opt opts[] = {
    {"timeout", SPOOL_OPT_MS, &port_ms, "t"},
    {"segment-bytes", SPOOL_OPT_UINT, &size, "s"},
    {"name", SPOOL_OPT_STRING, &name, "n"},
    {"anonymous", SPOOL_OPT_BOOL, &flag, "a"},
};

static int parse(int argc, char **argv, struct spool_err *err)
{
    bool help, version;
    port_ms = 5, size = 7, name = "def", flag = false;
    return spool_config_parse(opts, 4, argc, argv, &help, &version, err);
}

Test(config, flags_override_environment)
{
    setenv("SPOOL_SEGMENT_BYTES", "2k", 1);
    setenv("SPOOL_NAME", "from-env", 1);
    char *argv[] = {"x", "--name", "from-flag", "--timeout=2s", "--anonymous", NULL};
    struct spool_err err;
    cr_assert_eq(parse(5, argv, &err), 0, "%s", err.msg);
    cr_expect_str_eq(name, "from-flag");
    cr_expect_eq(size, 2048);
    cr_expect_eq(port_ms, 2000);
    cr_expect(flag);
    unsetenv("SPOOL_SEGMENT_BYTES");
    unsetenv("SPOOL_NAME");
}

Test(config, rejects_unknown_flags_and_bad_values)
{
    struct spool_err err;
    char *a1[] = {"x", "--nope", NULL};
    cr_expect_eq(parse(2, a1, &err), SPOOL_EINVAL);
    cr_expect(strstr(err.msg, "--nope") != NULL, "%s", err.msg);
    char *a2[] = {"x", "--timeout", "soon", NULL};
    cr_expect_eq(parse(3, a2, &err), SPOOL_EINVAL);
    char *a3[] = {"x", "--segment-bytes", NULL};
    cr_expect_eq(parse(2, a3, &err), SPOOL_EINVAL);
    setenv("SPOOL_ANONYMOUS", "maybe", 1);
    char *a4[] = {"x", NULL};
    cr_expect_eq(parse(1, a4, &err), SPOOL_EINVAL);
    cr_expect(strstr(err.msg, "SPOOL_ANONYMOUS") != NULL, "%s", err.msg);
    unsetenv("SPOOL_ANONYMOUS");
}

Test(config, env_names_follow_flags)
{
    char buf[64];
    spool_config_env_name("max-channels-per-connection", buf, sizeof buf);
    cr_expect_str_eq(buf, "SPOOL_MAX_CHANNELS_PER_CONNECTION");
}
