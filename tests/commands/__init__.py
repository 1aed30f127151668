"""The imagehook command run as a process: the installed wheel and the CLI, on throwaway SQLite files."""
