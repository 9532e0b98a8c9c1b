// SPDX-License-Identifier: GPL-2.0
/*
 * kup_lab_livepatch - the kup lab's own live patch: /proc/cmdline gains " kup-livepatch=1".
 *
 * It replaces one harmless, observable function of vmlinux, cmdline_proc_show() (fs/proc/cmdline.c), so a lab
 * guest can see whether the patch is active: while it is enabled, reading /proc/cmdline shows the boot command
 * line followed by the marker; once it is disabled (echo 0 > /sys/kernel/livepatch/kup_lab_livepatch/enabled)
 * and removed, the marker is gone. kup's tests use it to exercise live patching as an update path.
 *
 * The original function prints saved_command_line, which vmlinux does not export. A live patch may reach
 * unexported symbols through klp relocations (Documentation/livepatch/module-elf-format.rst), but producing
 * them needs tooling that 6.1 does not ship (klp-convert, kpatch-build). This module instead reads the command
 * line once, from /proc/cmdline, before it enables the patch (the unpatched function answers that read), and
 * the replacement prints that copy. saved_command_line never changes after boot, so the copy is exact.
 *
 * Build: lab/build-livepatch (against the Debian linux-headers of the lab kernel).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <asm/setup.h> /* COMMAND_LINE_SIZE */

#define KUP_LAB_MARKER " kup-livepatch=1"

/* The boot command line without its trailing newline, read by kup_lab_read_cmdline(). */
static char kup_lab_cmdline[COMMAND_LINE_SIZE];

static int kup_lab_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, kup_lab_cmdline);
	seq_puts(m, KUP_LAB_MARKER "\n");
	return 0;
}

static struct klp_func kup_lab_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = kup_lab_cmdline_proc_show,
	},
	{}
};

static struct klp_object kup_lab_objs[] = {
	{
		/* .name == NULL: the function lives in vmlinux */
		.funcs = kup_lab_funcs,
	},
	{}
};

static struct klp_patch kup_lab_patch = {
	.mod = THIS_MODULE,
	.objs = kup_lab_objs,
};

static int kup_lab_read_cmdline(void)
{
	struct file *f;
	loff_t pos = 0;
	ssize_t n, total = 0;

	f = filp_open("/proc/cmdline", O_RDONLY, 0);
	if (IS_ERR(f)) {
		pr_err("cannot open /proc/cmdline: %ld\n", PTR_ERR(f));
		return PTR_ERR(f);
	}
	/* One read normally returns it all; loop in case the seq_file hands it over in parts. */
	while (total < (ssize_t)sizeof(kup_lab_cmdline) - 1) {
		n = kernel_read(f, kup_lab_cmdline + total, sizeof(kup_lab_cmdline) - 1 - total, &pos);
		if (n < 0) {
			filp_close(f, NULL);
			pr_err("cannot read /proc/cmdline: %zd\n", n);
			return n;
		}
		if (n == 0)
			break;
		total += n;
	}
	filp_close(f, NULL);
	kup_lab_cmdline[total] = '\0';
	if (total > 0 && kup_lab_cmdline[total - 1] == '\n')
		kup_lab_cmdline[total - 1] = '\0';
	return 0;
}

static int __init kup_lab_livepatch_init(void)
{
	int ret = kup_lab_read_cmdline();

	if (ret)
		return ret;
	return klp_enable_patch(&kup_lab_patch);
}

/* Nothing to undo: disabling the patch (sysfs 'enabled' = 0) is what makes the module removable. */
static void __exit kup_lab_livepatch_exit(void)
{
}

module_init(kup_lab_livepatch_init);
module_exit(kup_lab_livepatch_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("kup lab");
MODULE_DESCRIPTION("kup lab live patch: appends kup-livepatch=1 to /proc/cmdline");
MODULE_INFO(livepatch, "Y");
