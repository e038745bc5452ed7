"""`orchestrator list [--keys]`: the named sweeps and the question each answers, the dataset layouts, and with
`--keys` every task's config keys with their defaults, help and allowed range."""

from __future__ import annotations


def add_list_parser(commands) -> None:
    listing = commands.add_parser("list", help="show the named sweeps and the question each answers")
    listing.add_argument("--keys", action="store_true", help="also list every config key with its default")


def cmd_list(args) -> int:
    import search_spaces
    from trainables.data.plans import FORMATS

    for name in search_spaces.names():
        print(f"{name:<24} {search_spaces.question(name)}")
    print(f"\ndataset layouts (for --data and prepare): {', '.join(FORMATS.names())}")
    if args.keys:
        from trainables.config import TrainConfig
        from trainables.config_keys import key_help, key_range
        from trainables.tasks import TASKS  # imports torch: only the keys need the tasks

        for task_name, task in TASKS.items():
            print(f"\nconfig keys of task '{task_name}' ({task.title}); use with --set KEY=VALUE:")
            for key, value in TrainConfig(task_name).to_flat_dict().items():
                if key != "task":
                    valid = key_range(key, task_name)
                    note = key_help(key, task_name) + (f" [{valid}]" if valid is not None else "")
                    print(f"  {key:<24} {value!r}  # {note}")
    return 0
