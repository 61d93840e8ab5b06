"""portreserve: hold well-known ports from early boot until their service asks for them."""

__version__ = "1.0.0"
