"""`OutputTree`: a finished job's output files as folders and files with sizes; the
node under the cursor names what to download (a file, a folder, or everything)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from nai_server.protocol import TreeInfo, format_size


class OutputTree(Tree[str]):
    """Node data is the tree path of the entry ("" for the root: everything)."""

    DEFAULT_CSS = """
    OutputTree {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("outputs", data="", id=id)
        self.info: TreeInfo | None = None

    def show_tree(self, info: TreeInfo) -> None:
        """Show this output tree, folders expanded."""
        if self.info is not None and self.info.id == info.id:
            return
        self.info = info
        self.clear()
        self.root.set_label(Text.assemble(("outputs", "bold"),
                                          f"  {info.files} files, {format_size(info.size)}"))
        folders: dict[str, TreeNode[str]] = {"": self.root}
        for entry in sorted(info.entries, key=lambda e: e.path):
            parts = entry.path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    parent = folders["/".join(parts[:depth - 1])]
                    folders[folder] = parent.add(parts[depth - 1] + "/", data=folder,
                                                 expand=True)
            label = Text(parts[-1])
            label.append(f"  {format_size(entry.size)}", style="dim")
            if entry.kind == "symlink":
                label.append(f" → {entry.target}", style="dim")
            folders["/".join(parts[:-1])].add_leaf(label, data=entry.path)
        self.root.expand()

    def show_message(self, message: str) -> None:
        """No tree to show (yet): say why."""
        self.info = None
        self.clear()
        self.root.set_label(Text(message, style="dim"))

    @property
    def selected_path(self) -> str:
        """The path under the cursor; "" means all outputs."""
        node = self.cursor_node
        return (node.data or "") if node is not None else ""
