# pylint: disable=missing-docstring
from .operator import *
