# The entitlement implication table: each type maps to the types its holder
# also holds directly. Usher follows it transitively (cycles are harmless),
# so by default an owner is also an admin, contributor and read_only.
# Types not named here imply only themselves. To change the table, copy
# this directory, edit this rule and serve it with --policy-dir.
package usher.entitlement

implies := {
	"owner": ["admin"],
	"admin": ["contributor"],
	"contributor": ["read_only"],
}
