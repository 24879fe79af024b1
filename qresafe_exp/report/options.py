"""Report options that take one value or a list of them."""


def one_or_many(option) -> list[str] | None:
    """``key=x`` on the command line arrives as a string, ``key=[x,y]`` as a list: both as a list of strings;
    null stays None (the option is off)."""
    if option is None:
        return None
    if isinstance(option, str):
        return [option]
    return [str(value) for value in option]
