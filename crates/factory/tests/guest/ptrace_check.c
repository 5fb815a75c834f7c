/* Runs in a 6.12 guest through ptrace_request(), which a test patch
 * replaces. Exit 0 only when
 *  - the patch is live: PTRACE_GETSIGMASK with addr 0x6e72 answers 0x6e72;
 *  - PTRACE_GETREGSET with a valid iovec works;
 *  - PTRACE_GETREGSET with an iovec pointer above USER_PTR_MAX fails with
 *    EFAULT.
 * The two GETREGSET calls go through the inlined access_ok() whose bound,
 * USER_PTR_MAX, is a runtime constant the patch loads from the variable:
 * a wrong load (register, displacement) fails one of them. A kept
 * placeholder (0x0123456789abcdef) would pass them both, since the
 * pointers between the two bounds are non-canonical and fault anyway; the
 * test checks the module's bytes for that. */
#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	int status;
	pid_t child = fork();

	if (child == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		_exit(0);
	}
	waitpid(child, &status, 0);

	long mark = ptrace(PTRACE_GETSIGMASK, child, (void *)0x6e72, 0);

	struct user_regs_struct regs;
	struct iovec iov = { &regs, sizeof(regs) };
	long valid = ptrace(PTRACE_GETREGSET, child, (void *)NT_PRSTATUS, &iov);

	errno = 0;
	long above = ptrace(PTRACE_GETREGSET, child, (void *)NT_PRSTATUS,
			    (void *)0x0080000000000000UL);
	int above_errno = errno;

	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	printf("mark=%#lx valid=%ld above=%ld errno=%d\n", mark, valid, above, above_errno);
	return mark == 0x6e72 && valid == 0 && above == -1 && above_errno == EFAULT ? 0 : 1;
}
