"""The kernel command line and the GRUB configuration the bootable exports write (pure
functions; the boot tests in test_boot_media.py run them for real)."""

from __future__ import annotations

import pytest

from onesuite_fs.core.errors import ConfigError
from onesuite_fs.transform import boot_media


def test_kernel_params_split_as_the_kernel_splits():
    line = boot_media.command_line('console=ttyS0  opt="a b;c" "x=1 2" $root')
    assert boot_media.kernel_params(line) == ["console=ttyS0", "opt=a b;c", "x=1 2", "$root"]


@pytest.mark.parametrize("append", ["a\nb", "a\rb", "a\tb", "a\0b", "caf\u00e9", "it's",
                                    "a\\b", 'opt="a b', "x" * 2048])
def test_command_lines_no_bootloader_passes_unchanged_are_refused(append):
    with pytest.raises(ConfigError, match="kernel arguments"):
        boot_media.command_line("rdinit=/sbin/init", append)


def test_grub_config_quotes_every_argument():
    """Each kernel argument is one single-quoted GRUB word: no $ expansion, no ; command
    separator, no line of its own."""
    config = boot_media.grub_efi_config("/onesuite-00", "/vmlinuz", "/initrd.img",
                                        boot_media.command_line('ro x=$root;reboot "y=a b"'))
    assert config.splitlines() == [
        "search --no-floppy --file --set=root /onesuite-00",
        "linux /vmlinuz 'ro' 'x=$root;reboot' 'y=a b'",
        "initrd /initrd.img",
        "boot"]
    assert "initrd" not in boot_media.grub_efi_config("/m", "/vmlinuz", None, "ro")
