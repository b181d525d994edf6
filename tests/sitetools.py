"""Small hand-written SystemImager server trees for unit tests."""

from __future__ import annotations

from pathlib import Path

from onesuite_fs.settings import Settings

DATA = Path(__file__).resolve().parent / "data"


def make_site(root: Path, cluster_xml: str | None, *, images: tuple[str, ...] = (),
              overrides: tuple[str, ...] = (), stubs: bool = True) -> Path:
    """A server tree under root: cluster.xml, an empty image dir and stub per image, and an
    override dir per name (each with a marker file naming it)."""
    config = root / "etc/systemimager"
    (config / "rsync_stubs").mkdir(parents=True, exist_ok=True)
    if cluster_xml is not None:
        (config / "cluster.xml").write_text(cluster_xml)
    for image in images:
        path = root / "var/lib/systemimager/images" / image
        (path / "etc").mkdir(parents=True, exist_ok=True)
        (path / "etc/image").write_text(image)
        if stubs:
            (config / "rsync_stubs" / f"40{image}").write_text(
                f"[{image}]\n\tpath=/var/lib/systemimager/images/{image}\n\n")
    for name in overrides:
        path = root / "var/lib/systemimager/overrides" / name
        path.mkdir(parents=True, exist_ok=True)
        (path / f"from-{name}").write_text(name)
    return root


def shipped_site(root: Path) -> Settings:
    """The shipped cluster.xml with every image and override directory present."""
    make_site(root, (DATA / "cluster-shipped.xml").read_text(),
              images=("SuSE10", "RHEL4", "Local"),
              overrides=("all", "SuSE10", "SuSE10_frontend", "Storage", "Local", "node001"))
    return Settings(root=root)
