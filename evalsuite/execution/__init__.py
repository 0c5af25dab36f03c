"""Running untrusted code: the bubblewrap sandbox and its pool of killable workers."""
