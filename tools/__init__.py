"""Tools that build what the package ships (the bundled model); not part of the installed package."""
